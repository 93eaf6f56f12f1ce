#!/usr/bin/env bash
# Builds the Debian packages and a static tarball per architecture into
# dist/, the way Debian builds them: dpkg-buildpackage (dh, debian/rules)
# on a copy of the source tree under build/deb, one run per architecture.
#
#   packaging/build-deb.sh VERSION ARCH...      (make deb / make dist)
#
# VERSION comes from packaging/version.sh. DIST (default dist/) and PKGBUILD
# (default build/deb, emptied first) move the outputs and the work. Outputs:
#   dist/<pkg>_<VERSION>_<arch>.deb       addrregd, addrreg-refserver, dhcp6-shield
#   dist/addrreg-<VERSION>-<arch>.tar.gz  the three packages' files and
#       install.sh/uninstall.sh, for other distributions (packaging/tarball)
set -euo pipefail
cd "$(dirname "$0")/.."
version=$1
shift
[ $# -gt 0 ] || set -- "$(dpkg --print-architecture)"
[[ $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || { echo "build-deb.sh: $version is not a Debian version" >&2; exit 2; }

top=$PWD
work=${PKGBUILD:-$top/build/deb}
src=$work/addrreg-$version
rm -rf "$work"
dist=${DIST:-$top/dist}
mkdir -p "$src" "$dist"

# The source: what git tracks plus new files not ignored, as in the work tree.
if git rev-parse --git-dir >/dev/null 2>&1; then
	git ls-files -z --cached --others --exclude-standard |
		while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
		tar --null -T - -cf - | tar -xf - -C "$src"
else
	tar --exclude=./build --exclude=./dist --exclude=./bin -cf - . | tar -xf - -C "$src"
fi

# A changelog entry for this build, dated by the commit so that the
# packages are reproducible (dpkg-buildpackage derives SOURCE_DATE_EPOCH
# from it).
if git rev-parse --verify -q HEAD >/dev/null 2>&1; then
	epoch=$(git show -s --format=%ct HEAD)
	what="Snapshot of commit $(git rev-parse --short=12 HEAD)."
else
	epoch=$(stat -c %Y VERSION)
	what="Build outside git."
fi
{
	printf 'addrreg (%s) unstable; urgency=medium\n\n  * %s\n\n' "$version" "$what"
	printf ' -- addrreg developers <dev@addrreg.invalid>  %s\n\n' "$(LC_ALL=C date -u -R -d "@$epoch")"
	cat debian/changelog
} > "$src/debian/changelog"

for arch in "$@"; do
	echo "== dpkg-buildpackage -a$arch ($version)"
	(cd "$src" && dpkg-buildpackage -b -us -uc --host-arch="$arch" >"$work/build-$arch.log" 2>&1) || {
		tail -40 "$work/build-$arch.log" >&2
		exit 1
	}
	# The tarball, for other distributions: one directory,
	# addrreg-VERSION-ARCH/, with install.sh and uninstall.sh (POSIX sh)
	# and the three packages' files under files/ (the OpenRC scripts added,
	# debian's lintian overrides left out).
	name=addrreg-$version-$arch
	tarroot=$work/tar-$arch/$name
	mkdir -p "$tarroot/files"
	for pkg in addrregd addrreg-refserver dhcp6-shield; do
		deb=${pkg}_${version}_${arch}.deb
		cp "$work/$deb" "$dist/"
		dpkg-deb -x "$work/$deb" "$tarroot/files"
		install -D -m 0755 "packaging/openrc/$pkg" "$tarroot/files/etc/init.d/$pkg"
	done
	rm -rf "$tarroot/files/usr/share/lintian"
	# Units under /usr/lib, which systemd searches on every distribution.
	if [ -d "$tarroot/files/lib/systemd" ]; then
		mkdir -p "$tarroot/files/usr/lib"
		mv "$tarroot/files/lib/systemd" "$tarroot/files/usr/lib/"
		rmdir "$tarroot/files/lib"
	fi
	install -m 0755 packaging/tarball/install.sh packaging/tarball/uninstall.sh "$tarroot/"
	echo "$version" > "$tarroot/VERSION"
	# Reproducible: sorted, fixed owner and time, no name or time in gzip.
	(cd "$work/tar-$arch" && find "$name" | LC_ALL=C sort) |
		tar -C "$work/tar-$arch" --no-recursion -T - --owner=0 --group=0 --numeric-owner \
			--mtime="@$epoch" -cf - | gzip -9n > "$dist/$name.tar.gz"
	ls -l "$dist"/*_"${version}"_"$arch".deb "$dist/$name.tar.gz"
done
