#!/usr/bin/env bash
# Runs the packages' maintainer scripts the way an image build does: dpkg -i
# in a chroot where systemd is not running. The chroot is an overlay of this
# machine's root (so dpkg, perl and deb-systemd-helper are there) on a tmpfs,
# in a private mount namespace: nothing changes outside it.
#
#   unshare --mount --propagation private chroot-maint.sh WORKDIR ADDRREGD.deb REFSERVER.deb SHIELD.deb
#
# Prints one "CHECK name ok|FAIL" line per assertion; the Go test reads them.
set -euo pipefail
work=$1 addrregd=$2 refserver=$3 shield=$4
mount -t tmpfs tmpfs "$work"
mkdir -p "$work"/{upper,ovl,root}
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/ovl" "$work/root"
root=$work/root
mount --bind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t tmpfs tmpfs "$root/run" # no /run/systemd/system: systemd is not running there
mount -t tmpfs tmpfs "$root/tmp"
cp "$addrregd" "$refserver" "$shield" "$root/tmp/"
inroot() { chroot "$root" "$@"; }
check() { # name, command...
	local name=$1
	shift
	if "$@"; then echo "CHECK $name ok"; else echo "CHECK $name FAIL"; fi
}
wants=/etc/systemd/system/multi-user.target.wants
check no-systemd-running test ! -d "$root/run/systemd/system"
inroot dpkg -i "/tmp/$(basename "$addrregd")" "/tmp/$(basename "$refserver")" "/tmp/$(basename "$shield")"
check addrregd-enabled-on-install test -L "$root$wants/addrregd.service"
check refserver-not-enabled test ! -e "$root$wants/addrreg-refserver.service"
check shield-not-enabled test ! -e "$root$wants/dhcp6-shield.service"
check conffile-installed test -f "$root/etc/default/addrregd"
# The units as installed, against the whole system (systemd-analyze --root).
for u in addrregd addrreg-refserver dhcp6-shield; do
	unit=$(cd "$root" && ls {usr/,}lib/systemd/system/$u.service 2>/dev/null | head -1)
	if MANPATH=$root/usr/share/man systemd-analyze verify --root="$root" "$root/$unit"; then
		echo "CHECK verify-$u ok"
	else
		echo "CHECK verify-$u FAIL"
	fi
	score=$(systemd-analyze security --offline=true --root="$root" "$root/$unit" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
	echo "SCORE $u $score"
done
# An administrator's disable survives an upgrade (here: reinstalling).
inroot systemctl disable addrregd.service
check disabled test ! -e "$root$wants/addrregd.service"
inroot dpkg -i "/tmp/$(basename "$addrregd")"
check disable-survives-upgrade test ! -e "$root$wants/addrregd.service"
inroot systemctl enable addrregd.service
# State as the daemon leaves it (StateDirectory= with DynamicUser=).
mkdir -p "$root/var/lib/private/addrregd"
ln -s private/addrregd "$root/var/lib/addrregd"
echo state > "$root/var/lib/private/addrregd/state"
inroot dpkg --purge addrregd
check purge-removes-conffile test ! -e "$root/etc/default/addrregd"
check purge-removes-state test ! -e "$root/var/lib/addrregd" -a ! -e "$root/var/lib/private/addrregd"
check purge-removes-symlink test ! -e "$root$wants/addrregd.service"
check purge-removes-dsh-state test ! -e "$root/var/lib/systemd/deb-systemd-helper-enabled/addrregd.service.dsh-also"
