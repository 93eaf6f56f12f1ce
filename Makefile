# addrreg — entry point for humans and CI. `make help` lists the targets.
SHELL      := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
GO         ?= go
# The Debian version of this commit (packaging/version.sh: VERSION file,
# commit count, date): later commits on main sort higher. Computed once.
ifndef VERSION
VERSION    := $(shell packaging/version.sh)
endif
LDFLAGS    := -s -w -X main.version=$(VERSION)
BIN        := bin
CMDS       := addrregd addrreg-refserver dhcp6-shield addrreg-loadgen
# What the packages ship, and for which architectures `make dist` builds.
SHIPPED    := addrregd addrreg-refserver dhcp6-shield
ARCHES     := amd64 arm64
GOARCH     ?= $(shell $(GO) env GOARCH)
OUT        ?= build/$(GOARCH)
# Static (no cgo, so no libc), paths trimmed, no VCS stamp: the same commit
# gives the same bytes on any machine and in any directory. The Go toolchain
# links static-pie only through cgo's external linker, so these are static
# non-PIE executables (lintian override in debian/).
STATIC_ENV   := CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH)
STATIC_FLAGS := -trimpath -buildvcs=false -ldflags '$(LDFLAGS)'
# Debian packages the demo and the end-to-end tests run: radvd is the router,
# dhclient and Kea are real DHCPv6 peers, dnsmasq the relay, nftables makes
# loss and refused sends; isc-dhcp-relay is the relay the deployment guide
# warns of (it drops registrations); prometheus brings promtool, which checks
# every daemon's metrics endpoint. Packaging and its tests: debhelper & co.
# build the .debs, rpm (rpmbuild) and rpmlint the RPMs, go-md2man the man
# pages, openrc runs the OpenRC scripts (in private namespaces: it does not
# replace the init system), busybox runs install.sh as Alpine would, lintian
# and systemd-analyze
# (systemd, man-db) check them, file reads ELF headers; debootstrap, e2fsprogs
# and zstd build the test image, QEMU boots it. dpkg-buildpackage insists on
# build-essential (its implicit Build-Depends), a minimal system lacks it.
# PostgreSQL is the reference server's shared database (the tests start
# their own cluster); BIND 9 is the DNS server the DNS-update tests run, dig
# asks it.
DEB_PKGS   := radvd iproute2 procps tcpdump ethtool isc-dhcp-client kea-dhcp6-server dnsmasq-base nftables isc-dhcp-relay prometheus \
              build-essential debhelper dpkg-dev fakeroot lintian go-md2man systemd man-db file rpm rpmlint openrc busybox \
              debootstrap e2fsprogs zstd qemu-system-x86 qemu-utils \
              postgresql bind9 bind9-dnsutils
# make image: the Debian releases the test images are built from (one
# directory each under IMAGE_DIR), and the package(s) they install
# (default: the addrregd package make deb just built).
IMAGE_DIR  ?= build/image
IMAGE_SUITES ?= bookworm trixie
IMAGE_DEBS ?=
FUZZTIME   ?= 2m
TEST_TIMEOUT ?= 30m
# make bench-server: offered rates (per second), time per rate, and an
# optional Kea 3.x kea-dhcp6 binary measured the same way (from a build
# tree, build kea-lfc too; with BENCH_DB=postgres, libdhcp_pgsql.so:
# internal/refserver/bench_server_test.go says where they are looked for).
RATES      ?= 20000,25000,30000,48000
BENCH_DURATION ?= 10s
KEA        ?=
# BENCH_DB=postgres: the reference server on a PostgreSQL database (a
# private test cluster, test/pgtest) instead of SQLite.
BENCH_DB   ?= sqlite
# BENCH_KEYS=random: the clients' interface IDs and DUIDs in no order (as
# real clients'), instead of counting up.
BENCH_KEYS ?= sequential

.PHONY: help deps deb-pkgs build static copyright man test unit e2e bench bench-server fuzz lint demo deb dist image version clean ci-clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

deps: ## install the Debian packages the demo and tests need (apt-get, as root)
	@if ! dpkg -s $(DEB_PKGS) >/dev/null 2>&1; then \
		echo "installing $(DEB_PKGS)"; \
		norc=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
			norc=1; printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; \
		fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PKGS); \
		rc=$$?; [ -z "$$norc" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi
	@# Kea, dnsmasq and dhcrelay are started by the tests in namespaces, never as
	@# system services; of the prometheus package only promtool is used. A
	@# policy-rc.d that says 101 keeps the packages' services from starting on install.
	@-systemctl disable --now kea-dhcp6-server >/dev/null 2>&1 || true
	@-systemctl disable --now isc-dhcp-relay >/dev/null 2>&1 || true
	@-systemctl disable --now prometheus >/dev/null 2>&1 || true
	@-systemctl disable --now postgresql named >/dev/null 2>&1 || true
	@$(GO) version

# The package list, for packaging's TestDepsProvideCommands.
deb-pkgs:
	@echo $(DEB_PKGS)

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
	@# The kernel's neighbour table is one for all namespaces (gc_thresh3 is
	@# 1024 by default): packages run in parallel, each test answering up to
	@# hundreds of addresses, and a full table fails sends with EINVAL, even
	@# radvd's multicast RAs. Raise the limits for the run (never lower them).
	@for kv in gc_thresh2=8192 gc_thresh3=16384; do k=net.ipv6.neigh.default.$${kv%=*}; v=$${kv#*=}; \
		[ "$$(sysctl -n $$k)" -ge "$$v" ] || sysctl -qw $$k=$$v; done
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	ADDRREG_IMAGE_DIR=$(abspath $(IMAGE_DIR)) ADDRREG_IMAGE_SUITES='$(IMAGE_SUITES)' $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	@# Every benchmark once, on its quick workload: a benchmark that breaks fails the build.
	ADDRREG_BENCH_QUICK=1 $(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout $(TEST_TIMEOUT) ./...

ci-clean: ## CI's run on a fresh clone of HEAD in a freshly debootstrapped Debian with only Go (root; CI_CLEAN_ARGS=--warm-image)
	./test/ci-clean.sh $(CI_CLEAN_ARGS)

unit: ## every test that needs no root (-short: tests that need root and namespaces skip)
	$(GO) test -short -count=1 ./...

bench: ## run the benchmarks
	$(GO) test -run '^$$' -bench . -benchmem -timeout $(TEST_TIMEOUT) ./...

bench-server: ## refserver (BENCH_DB=sqlite|postgres; KEA=path, Kea 3.x) answered % and p50/p99 at fixed RATES (root)
	@[ "$$(id -u)" = 0 ] || { echo "make bench-server needs root: it creates network namespaces" >&2; exit 1; }
	set -o pipefail; ADDRREG_BENCH_RATES='$(RATES)' ADDRREG_BENCH_DURATION='$(BENCH_DURATION)' ADDRREG_KEA='$(KEA)' ADDRREG_BENCH_DB='$(BENCH_DB)' ADDRREG_BENCH_KEYS='$(BENCH_KEYS)' \
		$(GO) test -count=1 -run '^$$' -bench '^BenchmarkServerRelay$$' -benchtime 1x -timeout $(TEST_TIMEOUT) -v ./internal/refserver/ \
		| grep -vE '^(=== RUN|goos|goarch|pkg|cpu)'

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
	./test/demo/demo.sh $(BIN)

static: ## static, reproducible binaries of the shipped commands for GOARCH into OUT (build/GOARCH)
	@mkdir -p $(OUT)
	@for c in $(SHIPPED); do \
		$(STATIC_ENV) $(GO) build $(STATIC_FLAGS) -o $(OUT)/$$c ./cmd/$$c || exit 1; \
	done

copyright: ## regenerate debian/copyright from the modules linked into the shipped binaries (go version -m)
	@rm -rf build/copyright
	@for a in $(ARCHES); do $(MAKE) -s static GOARCH=$$a OUT=build/copyright/$$a || exit 1; done
	$(GO) run ./packaging/copyright -o debian/copyright $(foreach a,$(ARCHES),$(addprefix build/copyright/$(a)/,$(SHIPPED)))

man: ## man pages from docs/man/*.md into build/man (go-md2man)
	@mkdir -p build/man
	@for f in docs/man/*.md; do \
		go-md2man -in $$f -out build/man/$$(basename $$f .md) || exit 1; \
	done

version: ## print the Debian version of this commit
	@echo $(VERSION)

deb: ## Debian packages for this machine's architecture into dist/ (dpkg-buildpackage)
	./packaging/build-deb.sh $(VERSION) $(GOARCH)

dist: ## .debs, RPMs and a tarball for each of ARCHES (amd64 arm64) into dist/, with dist/SHA256SUMS
	./packaging/build-deb.sh $(VERSION) $(ARCHES)
	./packaging/build-rpm.sh $(VERSION) $(ARCHES)
	./packaging/sha256sums.sh $(VERSION) $(ARCHES)

image: deb ## build the Debian test images (bookworm, trixie) with the package installed (IMAGE_DIR/SUITE, as root)
	@[ "$$(id -u)" = 0 ] || { echo "make image needs root: debootstrap and chroot" >&2; exit 1; }
	@# One build per release, side by side (build-image.sh locks per suite);
	@# each one's output goes to IMAGE_DIR/SUITE.log, shown if it fails.
	@debs="$(IMAGE_DEBS)"; debs=$${debs:-$$(ls -t dist/addrregd_*_$$(dpkg --print-architecture).deb | head -n1)}; \
	mkdir -p $(IMAGE_DIR); pids=(); \
	for s in $(IMAGE_SUITES); do \
		SUITE=$$s ./test/image/build-image.sh --out $(IMAGE_DIR)/$$s $$(for d in $$debs; do printf -- '--deb %s ' "$$d"; done) \
			>$(IMAGE_DIR)/$$s.log 2>&1 & pids+=($$!); \
	done; \
	rc=0; i=0; for s in $(IMAGE_SUITES); do \
		if wait $${pids[$$i]}; then grep '^build-image:' $(IMAGE_DIR)/$$s.log | sed "s/^/$$s: /"; \
		else echo "make image: $$s failed:" >&2; tail -n 40 $(IMAGE_DIR)/$$s.log >&2; rc=1; fi; i=$$((i+1)); \
	done; exit $$rc

clean: ## remove build output
	rm -rf $(BIN) build dist
