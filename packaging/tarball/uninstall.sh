#!/bin/sh
# Removes what install.sh installed (the list in /var/lib/addrreg/installed).
# install.sh also puts this script at /usr/lib/addrreg/uninstall.sh.
# POSIX sh.
#
#   uninstall.sh [--root DIR] [--purge]
#
# On / it first stops and disables the services (systemctl or rc-service).
# Configuration under /etc that was changed here is kept, as a package
# manager's remove does, and so are the state directories (addrregd's
# registrations, the server's bindings database); --purge removes them too.
# Stopping addrregd does not deregister its addresses unless it runs with
# --deregister-on-stop: the server keeps the bindings until their lifetimes
# end.
set -eu

me=uninstall.sh
root=${DESTDIR:-}
purge=
while [ $# -gt 0 ]; do
	case $1 in
	--root) [ $# -ge 2 ] || { echo "$me: --root needs a directory" >&2; exit 2; }; root=$2; shift ;;
	--root=*) root=${1#--root=} ;;
	--purge) purge=1 ;;
	-h | --help) sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "$me: unknown argument $1 (--help)" >&2; exit 2 ;;
	esac
	shift
done
root=${root%/}
state=$root/var/lib/addrreg
manifest=$state/installed
[ -r "$manifest" ] || { echo "$me: addrreg is not installed in ${root:-/} (no $manifest)" >&2; exit 1; }
echo "$me: removing addrreg $(cat "$state/version" 2>/dev/null) from ${root:-/}"

services="addrregd addrreg-refserver dhcp6-shield"
if [ -z "$root" ]; then
	for s in $services; do
		if grep -qxF "F /usr/lib/systemd/system/$s.service" "$manifest" && [ -d /run/systemd/system ]; then
			systemctl disable --now "$s.service" 2>/dev/null || true
		fi
		if grep -qxF "F /etc/init.d/$s" "$manifest" && command -v rc-service >/dev/null 2>&1; then
			rc-service "$s" stop 2>/dev/null || true
			rc-update del "$s" 2>/dev/null || true
		fi
	done
fi

grep '^F ' "$manifest" | while IFS= read -r line; do
	p=${line#F }
	case $p in
	/etc/*)
		if [ -e "$root$p" ] && ! cmp -s "$root$p" "$state/etc${p#/etc}" && [ -z "$purge" ]; then
			echo "  $p: changed here, kept (--purge removes it)"
			rm -f "$root$p.new"
			continue
		fi
		rm -f "$root$p" "$root$p.new"
		;;
	*) rm -f "$root$p" ;;
	esac
done
if [ -n "$purge" ]; then
	for s in $services; do
		rm -rf "$root/var/lib/$s" "$root/var/lib/private/$s" "$root/var/log/$s.log"
	done
fi
# The directories install.sh made, deepest first, if empty now (its paths
# have no spaces).
dirs=$(grep '^D ' "$manifest" | sed 's/^D //' | LC_ALL=C sort -r)
rm -rf "$state"
for d in $dirs; do
	rmdir "$root$d" 2>/dev/null || true
done
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload
fi
echo "$me: done"
