#!/usr/bin/env bash
# Builds a minimal Debian disk image (SUITE: bookworm, Debian 12, or trixie,
# Debian 13) with addrregd installed, the way an image builder does: debootstrap into a directory, `dpkg -i` of the
# package in a chroot where no systemd runs, an ext4 image made with
# `mkfs.ext4 -d` (no loop device, no mount). Out of OUT it leaves
#   rootfs.img   raw ext4 image of the root file system (boots with root=/dev/vda)
#   vmlinuz      the image's kernel and initrd, for QEMU's -kernel/-initrd
#   initrd.img
#   manifest     versions (package, kernel, systemd) and what was installed
#
# usage: build-image.sh --out DIR --deb PKG.deb [--deb PKG.deb …]
#
# The debootstrapped base (everything but the packages given with --deb) is
# kept as a tarball under CACHE (default /var/cache/addrreg-image), one per
# suite, keyed by the recipe, so a rebuild only unpacks it, installs the
# packages and makes the file system. Builds of different suites run in
# parallel (a lock and a package cache per suite); two of one suite take
# turns, the second reusing the first's base. The guest-side test helpers come from test/image/rootfs.
# Environment: MIRROR (default: the first Debian URI apt uses), SUITE
# (bookworm), CACHE, IMAGE_SIZE (mkfs size, default 2G). Bookworm's
# debootstrap and debian-archive-keyring already know trixie.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
SUITE=${SUITE:-bookworm}
CACHE=${CACHE:-/var/cache/addrreg-image}
IMAGE_SIZE=${IMAGE_SIZE:-2G}

die() { echo "build-image: $*" >&2; exit 1; }

out="" debs=()
while (($#)); do
	case $1 in
	--out) out=${2:?--out needs a directory}; shift 2 ;;
	--deb) debs+=("${2:?--deb needs a file}"); shift 2 ;;
	-h|--help) sed -n '2,20p' "$0"; exit 0 ;;
	*) echo "build-image: unknown argument $1" >&2; exit 2 ;;
	esac
done
[[ -n $out ]] || { echo "build-image: --out DIR is required" >&2; exit 2; }
((${#debs[@]})) || { echo "build-image: at least one --deb PKG.deb is required" >&2; exit 2; }
for d in "${debs[@]}"; do
	[[ -f $d ]] || die "--deb $d: no such file"
	dpkg-deb --info "$d" >/dev/null || die "--deb $d: not a Debian package"
done
[[ $(id -u) = 0 ]] || die "needs root (debootstrap, chroot, file ownership in the image)"
for tool in debootstrap mkfs.ext4 chroot tar zstd; do
	command -v "$tool" >/dev/null || die "$tool not found (make deps installs it)"
done

# The mirror apt itself uses (deb822 sources first, then sources.list).
if [[ -z ${MIRROR:-} ]]; then
	MIRROR=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
	[[ -n $MIRROR ]] || MIRROR=$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
	MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

# What the base holds. systemd-sysv makes systemd PID 1; the kernel comes
# with initramfs-tools (zstd compresses its initrd); iproute2 for `ip`;
# udev names and loads the virtio devices.
INCLUDE=systemd-sysv,udev,linux-image-amd64,initramfs-tools,zstd,kmod,iproute2,procps
# Installed by apt in the chroot afterwards (debootstrap resolves no virtual
# packages: network-manager's dbus-system-bus fails it): NetworkManager is
# the third way the image's NIC is configured (systemd-networkd comes with
# systemd); the test picks the kernel's SLAAC, networkd or NetworkManager
# per boot.
APT_INSTALL=network-manager
# Bump RECIPE when the base customisation below changes: it is part of the
# cache key, as are the suite, the mirror, the package list and rootfs/.
RECIPE=4
key=$( { echo "$RECIPE $SUITE $MIRROR $INCLUDE $APT_INSTALL"; sed -n '/^base_setup()/,/^}/p' "$0";
	(cd "$here/rootfs" && find . -type f -print0 | sort -z | xargs -0 sha256sum); } | sha256sum | cut -c1-16)
base=$CACHE/$SUITE-base-$key.tar.zst
debs_cache=$CACHE/debs/$SUITE # apt locks its archive: one per suite, for parallel builds

# base_setup customises a freshly debootstrapped root ($1) the way image
# builders do, before any package of ours is installed.
base_setup() {
	local root=$1
	echo addrreg-guest >"$root/etc/hostname"
	printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\taddrreg-guest\n' >"$root/etc/hosts"
	echo 'LABEL=addrreg-root / ext4 rw,errors=remount-ro 0 0' >"$root/etc/fstab"
	# A small initrd boots faster under TCG: only what a virtio guest needs.
	echo MODULES=list >"$root/etc/initramfs-tools/conf.d/addrreg-image.conf"
	printf '%s\n' virtio_pci virtio_blk virtio_net virtio_console ext4 >>"$root/etc/initramfs-tools/modules"
	# apt as an image builder runs it: recommended packages left out, no
	# service started in the chroot (policy-rc.d says 101), the downloaded
	# packages kept in the cache beside debootstrap's.
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
	chmod 755 "$root/usr/sbin/policy-rc.d"
	unshare --mount --propagation private sh -c "mount -t proc proc '$root/proc' &&
		mount --bind '$debs_cache' '$root/var/cache/apt/archives' &&
		chroot '$root' apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive chroot '$root' apt-get install -y -qq --no-install-recommends $APT_INSTALL" \
		>"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; die "apt-get install $APT_INSTALL in the chroot failed (log above)"; }
	rm -f "$root/usr/sbin/policy-rc.d"
	# The guest's own files: sysctl.d (temporary addresses), the unit
	# that brings eth0 up for the kernel's SLAAC, networkd's .network for
	# eth0, the test's control port.
	cp -a "$here/rootfs/." "$root/"
	chown -R root:root "$root/etc/sysctl.d" "$root/etc/systemd/system" "$root/etc/systemd/network" "$root/usr/local"
	# Enable our helper units as an image builder would (no systemd runs).
	chroot "$root" systemctl enable addrreg-image-link.service addrreg-image-control.service
	# A boot uses the kernel's SLAAC unless its command line asks for a
	# network manager (systemd.wants=systemd-networkd.service or
	# NetworkManager.service, with systemd.mask=addrreg-image-link.service):
	# network-manager's postinst enabled its units, networkd is off as in
	# Debian. Disabled here, they start only when a boot wants them.
	chroot "$root" systemctl disable NetworkManager.service NetworkManager-wait-online.service \
		NetworkManager-dispatcher.service systemd-networkd.service >/dev/null
	# Nothing that is not needed at boot: no logins, no timers; and under
	# TCG every unit costs the guest seconds of CPU (systemd-analyze blame
	# in a trixie guest: 21-23 s each for modprobe@drm, efi_pstore, fuse
	# and the debug/tracing/mqueue mounts), none of which a headless guest
	# on virtio uses.
	for u in getty@tty1.service serial-getty@ttyS0.service apt-daily.timer apt-daily-upgrade.timer \
		e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-timesyncd.service \
		modprobe@drm.service modprobe@efi_pstore.service modprobe@fuse.service modprobe@configfs.service \
		modprobe@dm_mod.service modprobe@loop.service sys-kernel-tracing.mount sys-kernel-debug.mount \
		sys-fs-fuse-connections.mount sys-kernel-config.mount dev-hugepages.mount dev-mqueue.mount \
		man-db.timer dpkg-db-backup.timer logrotate.timer; do
		ln -sf /dev/null "$root/etc/systemd/system/$u"
	done
	# In a private mount namespace so /proc never stays mounted on the host.
	unshare --mount --propagation private sh -c "mount -t proc proc '$root/proc' && chroot '$root' update-initramfs -c -k all" >/dev/null
	chroot "$root" apt-get clean
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
}

mkdir -p "$CACHE" "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/addrreg-image.XXXXXX")
# --one-file-system: never into a proc or sys a killed debootstrap left mounted.
trap 'rm -rf --one-file-system "$work"' EXIT
trap 'exit 1' INT TERM
root=$work/root

t0=$SECONDS
exec 9>"$CACHE/$SUITE.lock"
flock 9 # one builder of a suite at a time: a second one waits and then reuses the base
if [[ ! -f $base ]]; then
	echo "build-image: debootstrap $SUITE from $MIRROR (cache $CACHE)" >&2
	mkdir -p "$debs_cache"
	# INITRD=No: the kernel's postinst makes no initrd yet (a generic
	# MODULES=most one takes minutes); base_setup makes a small one.
	INITRD=No debootstrap --variant=minbase --include="$INCLUDE" --cache-dir="$debs_cache" \
		"$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
		{ tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
	base_setup "$root"
	tar --zstd -C "$root" --numeric-owner --xattrs -cf "$base.tmp" .
	mv "$base.tmp" "$base"
	# Older bases (other recipes) are of little further use: keep the one
	# before this, so that two checkouts with different recipes sharing
	# the cache (a branch and main) do not rebuild each other's every time.
	find "$CACHE" -maxdepth 1 -name "$SUITE-base-*.tar.zst" ! -name "$(basename "$base")" -printf '%T@ %p\n' |
		sort -rn | tail -n +2 | cut -d' ' -f2- | xargs -r rm -f --
	echo "build-image: base built in $((SECONDS - t0)) s: $base" >&2
else
	mkdir "$root"
	tar --zstd -C "$root" --numeric-owner --xattrs -xf "$base"
	echo "build-image: base unpacked from cache in $((SECONDS - t0)) s" >&2
fi
exec 9>&-

# Install the packages as an image builder does: dpkg -i in the chroot, no
# systemd running there. Enabling the service is the package's own business.
mkdir -p "$root/tmp/debs"
cp "${debs[@]}" "$root/tmp/debs/"
chroot "$root" sh -c 'dpkg -i /tmp/debs/*.deb' >"$work/dpkg.log" 2>&1 ||
	{ cat "$work/dpkg.log" >&2; die "dpkg -i failed"; }
rm -rf "$root/tmp/debs"
# Every guest generates its own machine ID at first boot (and with it its
# own DUID: addrregd derives it from /etc/machine-id at each start and stores
# none): the image ships an empty /etc/machine-id (machine-id(5)). Nor does
# it ship addrregd's state (StateDirectory; nothing ran, but an image built
# from a booted system would carry one host's registrations).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -rf "$root/var/lib/addrregd" "$root/var/lib/private/addrregd"

{
	echo "suite: $SUITE"
	echo "mirror: $MIRROR"
	echo "base: $(basename "$base")"
	echo "kernel: $(basename "$(readlink -f "$root/vmlinuz")")"
	chroot "$root" dpkg-query -W -f='package: ${Package} ${Version} ${Architecture}\n' systemd network-manager $(for d in "${debs[@]}"; do dpkg-deb -f "$d" Package; done)
	echo "addrregd.service: $(readlink "$root/etc/systemd/system/multi-user.target.wants/addrregd.service" || echo not enabled)"
} >"$out/manifest"

kernel=$(readlink -f "$root/vmlinuz")
cp "$kernel" "$out/vmlinuz"
cp "$root/boot/initrd.img-${kernel##*/vmlinuz-}" "$out/initrd.img"
rm -f "$out/rootfs.img"
mkfs.ext4 -q -F -L addrreg-root -d "$root" "$out/rootfs.img" "$IMAGE_SIZE"
echo "build-image: $out/rootfs.img ready in $((SECONDS - t0)) s" >&2
