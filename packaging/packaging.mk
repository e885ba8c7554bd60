# Packaging targets, included by the top Makefile.
#
#   make deb | rpm | packages [VERSION=x.y.z] [DIST=dir] [ARCH=goarch]
#                             [WEBAPP_BIN=prebuilt static binary]
#
# nfpm (packaging/nfpm.yaml) builds both formats in pure Go. It is pinned in
# packaging/tools.mod so that it stays out of the module's go.mod.
# Builds are reproducible: the same commit gives byte-identical packages
# (file times from the last commit, fixed modes, no build IDs or VCS stamps).

DIST ?= dist
ARCH ?= $(shell $(GO) env GOARCH)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
NFPM := $(GO) tool -modfile=packaging/tools.mod nfpm
# The commit `webapp version` names (-dirty with uncommitted changes), and its
# date: the packages are built without Go's VCS stamp.
COMMIT ?= $(shell c=$$(git rev-parse --short=12 HEAD 2>/dev/null) && { git diff --quiet HEAD -- 2>/dev/null || c=$$c-dirty; echo $$c; })
COMMIT_DATE ?= $(shell TZ=UTC git log -1 --date=format-local:%Y-%m-%d --format=%cd 2>/dev/null)

# nfpm's architecture names, for the output file names.
deb_arch = $(or $(patsubst 386,i386,$(filter 386,$(1))),$(1))
rpm_arch = $(or $(strip $(if $(filter amd64,$(1)),x86_64)$(if $(filter arm64,$(1)),aarch64)$(if $(filter 386,$(1)),i386)),$(1))
DEB_FILE := $(DIST)/webapp_$(VERSION)_$(call deb_arch,$(ARCH)).deb
RPM_FILE := $(DIST)/webapp-$(VERSION).$(call rpm_arch,$(ARCH)).rpm

# Tools the packaging tests run (see packaging/packaging_test.go).
APT_PACKAGES += lintian man-db rpm rpmlint shellcheck systemd

MAINTAINER_SCRIPTS := $(wildcard packaging/scripts/deb/* packaging/scripts/rpm/*)

.PHONY: deb rpm packages lint-packaging

deb: ## build dist/webapp_<version>_<arch>.deb (DIST=, VERSION=)
	$(call nfpm_package,deb,$(DEB_FILE))

rpm: ## build dist/webapp-<version>.<arch>.rpm (DIST=, VERSION=)
	$(call nfpm_package,rpm,$(RPM_FILE))

packages: deb rpm ## build the deb and the rpm

# `make lint` also checks the maintainer scripts.
lint: lint-packaging
lint-packaging:
	shellcheck --shell=sh $(MAINTAINER_SCRIPTS)

# nfpm_package FORMAT OUTPUT: build webapp (or take WEBAPP_BIN) and the man
# page into a private staging directory, so that parallel builds into
# different DISTs do not meet, then package them.
define nfpm_package
	@set -e; \
	stage=$$(mktemp -d "$${TMPDIR:-/tmp}/webapp-pkg.XXXXXX"); \
	trap 'rm -rf "$$stage"' EXIT; \
	if [ -n '$(WEBAPP_BIN)' ]; then cp '$(WEBAPP_BIN)' "$$stage/webapp"; else \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$(ARCH) $(GO) build -trimpath -buildvcs=false \
	    -ldflags='-s -w -buildid= -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.commitDate=$(COMMIT_DATE)' -o "$$stage/webapp" ./cmd/webapp; \
	fi; \
	gzip -9n <packaging/webapp.1 >"$$stage/webapp.1.gz"; \
	mkdir -p $(DIST); \
	VERSION='$(VERSION)' ARCH='$(ARCH)' STAGE="$$stage" SOURCE_DATE_EPOCH='$(SOURCE_DATE_EPOCH)' \
	  $(NFPM) package --config packaging/nfpm.yaml --packager $(1) --target $(2) >/dev/null; \
	echo "built $(2)"
endef
