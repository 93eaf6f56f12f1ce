#!/bin/sh
# Installs addrreg (addrregd, addrreg-refserver, dhcp6-shield) from this
# unpacked release tarball, on any Linux distribution: the binaries are
# static. POSIX sh (dash, busybox ash, bash).
#
#   ./install.sh [--root DIR] [--init auto|systemd|openrc]
#
# --root DIR  install under DIR instead of / (or DESTDIR=DIR), for images
#             and package builds; nothing is started or reloaded then.
# --init      which service files to install: systemd units under
#             /usr/lib/systemd/system, or OpenRC scripts under /etc/init.d.
#             auto (the default): OpenRC if DIR has openrc-run, else systemd.
#
# Files under /etc are configuration: one changed here is never
# overwritten. When the shipped version changed too, the new one is put
# beside it as FILE.new, and install.sh says so. What it installed is listed
# in /var/lib/addrreg/installed (uninstall.sh reads it); the shipped
# configuration is kept under /var/lib/addrreg/etc to tell a changed file
# from an old one. Running it again (an upgrade) replaces the binaries
# atomically; running services keep the old one until restarted.
set -eu

me=install.sh
root=${DESTDIR:-}
init=auto
while [ $# -gt 0 ]; do
	case $1 in
	--root) [ $# -ge 2 ] || { echo "$me: --root needs a directory" >&2; exit 2; }; root=$2; shift ;;
	--root=*) root=${1#--root=} ;;
	--init) [ $# -ge 2 ] || { echo "$me: --init needs auto, systemd or openrc" >&2; exit 2; }; init=$2; shift ;;
	--init=*) init=${1#--init=} ;;
	-h | --help) sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "$me: unknown argument $1 (--help)" >&2; exit 2 ;;
	esac
	shift
done
root=${root%/}
if [ -n "$root" ] && [ ! -d "$root" ]; then
	echo "$me: --root $root: no such directory" >&2
	exit 2
fi
case $init in
auto)
	if [ -x "$root/sbin/openrc-run" ] || [ -x "$root/usr/sbin/openrc-run" ]; then init=openrc; else init=systemd; fi ;;
systemd | openrc) ;;
*) echo "$me: --init $init: want auto, systemd or openrc" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
src=$here/files
[ -d "$src" ] || { echo "$me: no $src: run it from the unpacked tarball" >&2; exit 1; }
version=$(cat "$here/VERSION")
state=$root/var/lib/addrreg
manifest=$state/installed

old=
[ -r "$state/version" ] && old=$(cat "$state/version")
if [ "$old" = "$version" ]; then
	echo "$me: reinstalling addrreg $version in ${root:-/} ($init)"
elif [ -n "$old" ]; then
	echo "$me: upgrading addrreg $old to $version in ${root:-/} ($init)"
else
	echo "$me: installing addrreg $version in ${root:-/} ($init)"
fi

pre_dirs=
for d in /var /var/lib /var/lib/addrreg /var/lib/addrreg/etc; do
	[ -d "$root$d" ] || pre_dirs="$pre_dirs $d"
done
mkdir -p "$state/etc"
new_manifest=$manifest.tmp.$$
: > "$new_manifest"
for d in $pre_dirs; do echo "D $d" >> "$new_manifest"; done
trap 'rm -f "$new_manifest"' EXIT
# Directories made here, so that uninstall.sh removes them (when empty)
# and none that the system had.
mkdirs() {
	if [ ! -d "$1" ]; then
		mkdirs "$(dirname "$1")"
		mkdir "$1"
		echo "D ${1#"$root"}" >> "$new_manifest"
	fi
}
# An earlier install's directories stay listed.
if [ -r "$manifest" ]; then
	grep '^D ' "$manifest" >> "$new_manifest" || true
fi

# put SRC DEST: copy beside DEST, then rename over it (a running binary is
# replaced, not written into; a reader never sees half a file).
put() {
	mkdirs "$(dirname "$2")"
	cp "$1" "$2.addrreg-tmp.$$"
	chmod "$(stat_mode "$1")" "$2.addrreg-tmp.$$"
	mv -f "$2.addrreg-tmp.$$" "$2"
}
stat_mode() {
	if [ -x "$1" ]; then echo 755; else echo 644; fi
}

notes=
(cd "$src" && find . -type f | LC_ALL=C sort) > "$state/files.tmp.$$"
while IFS= read -r f; do
	p=${f#.}
	case $p in
	/usr/lib/systemd/*) [ "$init" = systemd ] || continue ;;
	/etc/init.d/*) [ "$init" = openrc ] || continue ;;
	esac
	dest=$root$p
	case $p in
	/etc/*)
		shipped=$state/etc${p#/etc}
		if [ ! -e "$dest" ] || cmp -s "$src$p" "$dest"; then
			put "$src$p" "$dest"
		elif [ -e "$shipped" ] && cmp -s "$dest" "$shipped"; then
			# Not changed here since the last install: the new version.
			put "$src$p" "$dest"
			echo "  $p: updated"
		elif [ -e "$shipped" ] && cmp -s "$src$p" "$shipped"; then
			: # Changed here, and the shipped version is the same: kept.
		else
			put "$src$p" "$dest.new"
			echo "  $p: changed here, kept; the new version is $p.new"
			notes="$notes $p"
		fi
		mkdirs "$(dirname "$shipped")"
		cp "$src$p" "$shipped"
		;;
	*)
		put "$src$p" "$dest"
		;;
	esac
	echo "F $p" >> "$new_manifest"
done < "$state/files.tmp.$$"
rm -f "$state/files.tmp.$$"

# uninstall.sh stays after the tarball is gone.
put "$here/uninstall.sh" "$root/usr/lib/addrreg/uninstall.sh"
echo "F /usr/lib/addrreg/uninstall.sh" >> "$new_manifest"
# Files of an earlier version that this one no longer ships.
if [ -r "$manifest" ]; then
	grep '^F ' "$manifest" | while IFS= read -r line; do
		p=${line#F }
		case $p in /etc/*) continue ;; esac
		grep -qxF "F $p" "$new_manifest" || rm -f "$root$p"
	done
fi
mv -f "$new_manifest" "$manifest"
trap - EXIT
echo "$version" > "$state/version"

if [ -n "$notes" ]; then
	echo "$me: merge the .new files by hand:$notes"
fi
echo "$me: done; remove with $root/usr/lib/addrreg/uninstall.sh (--purge also removes configuration and state)"
[ -z "$root" ] || exit 0
case $init in
systemd)
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload
		if [ -n "$old" ]; then
			echo "$me: restart what runs: systemctl try-restart addrregd addrreg-refserver dhcp6-shield"
		else
			echo "$me: start it: systemctl enable --now addrregd (the server and the shield: set their /etc/default file first)"
		fi
	fi ;;
openrc)
	if [ -n "$old" ]; then
		echo "$me: restart what runs: rc-service addrregd restart (and the server, the shield)"
	else
		echo "$me: start it: rc-update add addrregd default && rc-service addrregd start"
	fi ;;
esac
