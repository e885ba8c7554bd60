# make proto, included by the top Makefile: regenerates the Go code of
# webapp's gRPC service (internal/ticker/tickerpb) from its .proto. The
# generated code is committed, so neither the build nor `make test` needs
# this; run it after changing the .proto.
#
# protoc comes from Debian's protobuf-compiler; its Go plugins are installed
# with `go install` into the build directory, one directory per version,
# and stay out of go.mod.

PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
PROTO_TOOLS := $(CURDIR)/$(BIN)/tools/proto-$(PROTOC_GEN_GO_VERSION)-$(PROTOC_GEN_GO_GRPC_VERSION)
PROTO_DIR := internal/ticker/proto
PROTO_FILES := $(PROTO_DIR)/webapp/v1/ticker.proto

.PHONY: proto

proto: $(PROTO_TOOLS)/protoc-gen-go $(PROTO_TOOLS)/protoc-gen-go-grpc ## regenerate internal/ticker/tickerpb from its .proto
	@command -v protoc >/dev/null || { \
	  if [ "$$(id -u)" != 0 ]; then echo "make proto: protoc not found: install Debian package protobuf-compiler (as root)"; exit 1; fi; \
	  echo "make proto: installing protobuf-compiler"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends protobuf-compiler >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends protobuf-compiler; }; }
	PATH=$(PROTO_TOOLS):$$PATH protoc --proto_path=$(PROTO_DIR) \
	  --go_out=. --go_opt=module=github.com/baton-dev/baton \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/baton-dev/baton \
	  $(PROTO_FILES)

$(PROTO_TOOLS)/protoc-gen-go:
	GOBIN=$(PROTO_TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(PROTO_TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(PROTO_TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
