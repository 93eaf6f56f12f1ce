# addrreg — entry point for humans and CI. `make help` lists the targets.
SHELL      := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
GO         ?= go
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS    := -s -w -X main.version=$(VERSION)
BIN        := bin
CMDS       := addrregd addrreg-refserver dhcp6-shield addrreg-loadgen
# Debian packages the demo and the end-to-end tests run: radvd is the router,
# dhclient and Kea are real DHCPv6 peers, dnsmasq the relay, nftables makes
# loss and refused sends; debootstrap, e2fsprogs and zstd build the test
# image, QEMU boots it.
DEB_PKGS   := radvd iproute2 procps tcpdump ethtool isc-dhcp-client kea-dhcp6-server dnsmasq-base nftables \
	debootstrap e2fsprogs zstd qemu-system-x86 qemu-utils
# make image: where the bookworm test image goes, and the package(s) it
# installs (default: the addrregd package make deb just built).
IMAGE_DIR  ?= build/image
IMAGE_DEBS ?=
FUZZTIME   ?= 2m
TEST_TIMEOUT ?= 30m

.PHONY: help deps build test unit e2e bench fuzz lint demo deb image clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

deps: ## install the Debian packages the demo and tests need (apt-get, as root)
	@if ! dpkg -s $(DEB_PKGS) >/dev/null 2>&1; then \
		echo "installing $(DEB_PKGS)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PKGS); \
	fi
	@# Kea and dnsmasq are started by the tests in namespaces, never as system services.
	@-systemctl disable --now kea-dhcp6-server >/dev/null 2>&1 || true
	@$(GO) version

build: ## build the binaries into bin/
	@mkdir -p $(BIN)
	@for c in $(CMDS); do \
		if ls cmd/$$c/*.go >/dev/null 2>&1; then $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$$c ./cmd/$$c || exit 1; fi; \
	done

test: deps image ## install what the tests need, then run unit and end-to-end tests (as root)
	@[ "$$(id -u)" = 0 ] || { echo "make test needs root: the end-to-end tests use network namespaces" >&2; exit 1; }
	@# Namespaces left by a test binary killed before its cleanup ran: only
	@# those over an hour old, so a test run elsewhere on the machine survives.
	@for ns in $$(find /run/netns -maxdepth 1 -name 'ar*-*' -mmin +60 -printf '%f\n' 2>/dev/null); do ip netns del $$ns; done
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	ADDRREG_IMAGE_DIR=$(abspath $(IMAGE_DIR)) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

unit: ## unit tests only (no root needed): pure packages
	$(GO) test -count=1 ./scheduler/...

bench: ## run the benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./...

fuzz: ## run every fuzz target for FUZZTIME (default 2m) each
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

lint: ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	@command -v staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@latest
	staticcheck ./...

demo: deps build ## a throwaway network in namespaces showing registrations live (Ctrl-C ends it)
	@[ "$$(id -u)" = 0 ] || { echo "make demo needs root: it creates network namespaces" >&2; exit 1; }
	./test/demo.sh $(BIN)

deb: build ## build a Debian package of addrregd into dist/
	./packaging/build-deb.sh $(VERSION)

image: deb ## build the Debian bookworm test image with the package installed (IMAGE_DIR, as root)
	@[ "$$(id -u)" = 0 ] || { echo "make image needs root: debootstrap and chroot" >&2; exit 1; }
	@debs="$(IMAGE_DEBS)"; debs=$${debs:-$$(ls -t dist/addrregd_*_$$(dpkg --print-architecture).deb | head -n1)}; \
	./test/image/build-image.sh --out $(IMAGE_DIR) $$(for d in $$debs; do printf -- '--deb %s ' "$$d"; done)

clean: ## remove build output
	rm -rf $(BIN) dist build
