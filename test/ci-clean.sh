#!/usr/bin/env bash
# make ci-clean: CI's run (.ci/run, as root, CI=true) on a fresh clone of
# this checkout's HEAD, inside a freshly debootstrapped Debian (minbase: no
# compiler, no tools, only what every Debian system has) with nothing but Go
# copied in. A step `make deps` does not install, a file the build reads from
# the developer's home, or a tool installed by hand on this machine fails
# here first, as it would on the CI machine.
#
#   test/ci-clean.sh [--warm-image] [--keep]
#
#   --warm-image  share this machine's test-image base cache
#                 (/var/cache/addrreg-image): saves the image test's
#                 debootstrap (~4 min); without it the run is fully cold.
#   --keep        keep the root directory (default: removed, the log kept).
#
# Environment: SUITE (bookworm), MIRROR (the one apt uses here),
# CI_CLEAN_CACHE (/var/cache/addrreg-ci: the debootstrapped minbase, as a
# tarball, renewed after 7 days; it is never modified in place, every run
# unpacks it afresh), CI_CLEAN_DIR (/var/tmp).
#
# The clean room shares this machine's kernel (namespaces, sysctls, the
# neighbour table), as CI does; mounts are made in a private mount namespace
# and vanish with it. Exit status: .ci/run's.
set -euo pipefail
# All of it in one compound command: bash reads it whole before running it,
# so editing this file while a rehearsal runs cannot break that rehearsal.
{
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
warm= keep=
for a in "$@"; do
	case $a in
	--warm-image) warm=1 ;;
	--keep) keep=1 ;;
	*) echo "ci-clean: unknown argument $a (--warm-image, --keep)" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "ci-clean: needs root (debootstrap, chroot, mounts)" >&2; exit 2; }
for tool in debootstrap unshare chroot zstd git; do
	command -v "$tool" >/dev/null || { echo "ci-clean: $tool not found (make deps installs it)" >&2; exit 2; }
done
GOROOT_HOST=${GOROOT_HOST:-/usr/local/go}
[ -x "$GOROOT_HOST/bin/go" ] || { echo "ci-clean: no Go at $GOROOT_HOST" >&2; exit 2; }

SUITE=${SUITE:-bookworm}
if [ -z "${MIRROR:-}" ]; then
	MIRROR=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)[[:space:]]*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
	[ -n "$MIRROR" ] || MIRROR=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
	MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
CACHE=${CI_CLEAN_CACHE:-/var/cache/addrreg-ci}
base=$CACHE/$SUITE-minbase.tar.zst
work=$(mktemp -d "${CI_CLEAN_DIR:-/var/tmp}/addrreg-ci.XXXXXX")
root=$work/root
log=$work/ci.log
mkdir -p "$CACHE" "$root"

# Processes left in the room (a server a test forgot): killed before the
# directory goes, so nothing keeps running from a removed root.
room_pids() {
	local p
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && echo "${p#/proc/}"
	done
	return 0
}
finish() {
	local rc=$?
	trap - EXIT INT TERM HUP
	[ -z "${child:-}" ] || kill -9 "$child" 2>/dev/null || true
	pids=$(room_pids)
	[ -z "$pids" ] || { echo "ci-clean: killing processes left in the room: $pids" >&2; kill -9 $pids 2>/dev/null || true; }
	if [ -n "$keep" ]; then
		echo "ci-clean: root kept in $root" >&2
	else
		# --one-file-system: never into a mount that outlived the namespace.
		rm -rf --one-file-system "$root" || echo "ci-clean: could not remove $root" >&2
	fi
	echo "ci-clean: log in $log" >&2
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [ ! -s "$base" ] || [ -n "$(find "$base" -mtime +7 2>/dev/null)" ]; then
	echo "ci-clean: debootstrap --variant=minbase $SUITE from $MIRROR" >&2
	tmp=$work/base
	debootstrap --variant=minbase --include=git,make,ca-certificates "$SUITE" "$tmp" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
		{ tail -20 "$work/debootstrap.log" >&2; exit 1; }
	rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
	tar -C "$tmp" --numeric-owner -cf - . | zstd -q -T0 -o "$base.new"
	mv "$base.new" "$base"
	rm -rf --one-file-system "$tmp"
fi
echo "ci-clean: unpacking $base into $root" >&2
zstd -q -dc "$base" | tar -C "$root" --numeric-owner -xf -

# What a CI machine has besides minbase: Go, the apt configuration of its
# site (mirror, proxy settings), its certificate authorities, name resolution.
cp -a "$GOROOT_HOST" "$root/usr/local/go"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
	rm -f "$root/etc/apt/sources.list"
	cp -a /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/"
fi
cp -n /etc/apt/apt.conf.d/* "$root/etc/apt/apt.conf.d/" 2>/dev/null || true
# The site's own certificate authorities (a TLS-inspecting egress proxy's):
# without them the module proxy's certificate is not trusted.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
	cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
	chroot "$root" update-ca-certificates >/dev/null 2>&1 || echo "ci-clean: update-ca-certificates failed in the room" >&2
fi

# The fresh clone CI makes: this checkout's HEAD (commit it first).
git -C "$top" diff --quiet HEAD || echo "ci-clean: uncommitted changes are not in the clone" >&2
mkdir -p "$root/src"
git clone -q --no-local "$top" "$root/src/addrreg"
git -C "$root/src/addrreg" checkout -q --detach "$(git -C "$top" rev-parse HEAD)"
echo "ci-clean: commit $(git -C "$root/src/addrreg" log -1 --format='%h %s')" >&2

goenv=()
for v in GOPROXY GOSUMDB GONOSUMDB GOPRIVATE GOFLAGS GOTOOLCHAIN; do
	[ -z "${!v:-}" ] || goenv+=("$v=${!v}")
done
# The room's / is a mount point, as a machine's is (unshare --propagation
# in the image build fails on a plain directory).
mounts="mount --bind '$root' '$root' && mount -t proc proc '$root/proc' && mount -t sysfs sysfs '$root/sys' &&
	mount --rbind /dev '$root/dev' && mount -t tmpfs tmpfs '$root/run'"
# The machine-wide test lock (test/topo/exclusive.go) is the host's: a test
# that owns the kernel's neighbour table in the room waits for the host's
# tests, and theirs for it, as if both ran on one machine (they share its kernel).
for f in addrreg-test.lock addrreg-test.turnstile; do
	touch "/run/$f"
	mounts="$mounts && touch '$root/run/$f' && mount --bind '/run/$f' '$root/run/$f'"
done
[ -z "$warm" ] || { mkdir -p /var/cache/addrreg-image "$root/var/cache/addrreg-image";
	mounts="$mounts && mount --bind /var/cache/addrreg-image '$root/var/cache/addrreg-image'"; }

echo "ci-clean: CI=true bash .ci/run in the room (log: $log)" >&2
start=$(date +%s)
set +e
unshare --mount --propagation private -- bash -c "$mounts && exec chroot '$root' env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin CI=true ${goenv[*]} \
	bash -c 'cd /src/addrreg && bash .ci/run'" >"$log" 2>&1 &
# In the background and waited for: a signal ends the rehearsal at once
# (its trap kills what runs in the room), not when the run ends.
child=$!
wait "$child"
rc=$?
child=
set -e
secs=$(($(date +%s) - start))
tail -n 30 "$log"
echo "ci-clean: .ci/run rc $rc in ${secs} s ($SUITE minbase, $([ -n "$warm" ] && echo warm || echo cold) image cache)" >&2
exit "$rc"
}
