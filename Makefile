# baton: make help lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION := $(shell cat VERSION)
BIN := bin
ADDR ?= 127.0.0.1:8080
# Test binaries for the sandbox and the packages are static.
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w -buildid='
# Debian packages the test suite needs; `make deps` installs what is missing.
APT_PACKAGES := systemd-container nghttp2-client mmdebstrap haproxy nginx-light python3-websockets
# Packages whose daemon the install would start (the fleet test runs its
# own): a policy-rc.d keeps them stopped during the install, and they are
# disabled after it.
APT_DAEMONS := haproxy nginx
TEST_TIMEOUT ?= 40m
# How long `make fuzz` runs each fuzz target.
FUZZTIME ?= 5s
# staticcheck, installed into the build directory by `make lint`, one
# directory per version, and kept out of go.mod. v0.8.2 is staticcheck
# 2026.2.2, which supports Go 1.26.
STATICCHECK_VERSION := v0.8.2
STATICCHECK_DIR := $(CURDIR)/$(BIN)/tools/staticcheck-$(STATICCHECK_VERSION)
STATICCHECK := $(STATICCHECK_DIR)/staticcheck
# The fuzz targets, as package:Target (go test fuzzes one target per run).
FUZZ_TARGETS := ./activation:FuzzParseEnv ./activation:FuzzListenInherited ./upgrade:FuzzInherited ./upgrade:FuzzInheritedFDs ./upgrade:FuzzControlRequest \
	./upgrade:FuzzControlAnswer ./upgrade:FuzzHandoffReady ./upgrade:FuzzHandoffAccepting ./upgrade:FuzzParseRequest ./upgrade:FuzzInheritedFiles \
	./upgrade:FuzzReceiveConns

.DEFAULT_GOAL := help
.PHONY: help build run test fuzz bench lint vet deps clean staticcheck

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/webapp
	$(GOBUILD) -o $(BIN)/webapp ./cmd/webapp

run: build ## start webapp on $(ADDR) without systemd (SIGHUP swaps, Ctrl-C drains and stops)
	$(BIN)/webapp serve --listen $(ADDR) --control $(CURDIR)/$(BIN)/control.sock

test: deps ## run the whole test suite (installs what it needs)
	$(MAKE) lint
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(MAKE) deploy-check
	$(MAKE) fuzz
	$(MAKE) bench-smoke

fuzz: ## run each fuzz target for FUZZTIME, default 5s
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; corpus=$$pkg/testdata/fuzz/$$name; \
	  before=$$(ls $$corpus 2>/dev/null | wc -l); \
	  echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
	  if out=$$($(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s $$pkg 2>&1); then \
	    echo "$$out" | tail -1; continue; \
	  fi; \
	  echo "$$out"; \
	  if [ "$$(ls $$corpus 2>/dev/null | wc -l)" = "$$before" ] && echo "$$out" | grep -qx '[[:space:]]*context deadline exceeded'; then \
	    echo "fuzz $$name: no failing input; the fuzzing coordinator tripped over its own -fuzztime deadline (go.dev/issue/75804, a loaded machine): not counted"; \
	  else exit 1; fi; \
	done

lint: staticcheck ## go vet, gofmt, go mod tidy, staticcheck and shellcheck
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	@$(GO) mod tidy -diff || { echo "go.mod or go.sum is not tidy: run go mod tidy"; exit 1; }
	@cd bench && $(GO) mod tidy -diff || { echo "bench/go.mod or bench/go.sum is not tidy: run go mod tidy in bench"; exit 1; }
	$(STATICCHECK) ./...
	cd bench && $(STATICCHECK) ./...
	$(MAKE) deploy-lint

staticcheck: $(STATICCHECK)
$(STATICCHECK):
	GOBIN=$(STATICCHECK_DIR) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

deps: ## install the Debian packages the tests need (as root)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "make deps: missing Debian packages: $$missing (run make deps as root)"; exit 0; fi; \
	echo "make deps: installing $$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy=1; fi; \
	apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$missing; }; rc=$$?; \
	if [ -n "$$policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	for d in $(APT_DAEMONS); do systemctl disable --quiet $$d.service 2>/dev/null || true; done; \
	exit $$rc
	@# The Debian 13 root (systemd 257) of the e2e tests, built once and cached
	@# under /var/tmp (systemdtest.DebianRoot); booting it checks it.
	@if [ "$$(id -u)" = 0 ]; then $(GO) test -count=1 -run '^TestVersions$$' ./systemd/systemdtest >/dev/null || \
	  { echo "make deps: the Debian 13 root for the e2e tests failed to build or boot:"; $(GO) test -count=1 -v -run '^TestVersions$$' ./systemd/systemdtest; exit 1; }; fi

clean: ## remove build output
	rm -rf $(BIN) dist

-include packaging/packaging.mk
-include bench/bench.mk
-include deploy/deploy.mk
-include internal/ticker/proto.mk
