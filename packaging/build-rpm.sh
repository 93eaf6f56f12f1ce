#!/usr/bin/env bash
# Builds the RPM packages, one per .deb, from the .debs of the same version
# that build-deb.sh put in dist/: the same static binaries, units,
# /etc/default files, man pages and docs, repacked by rpmbuild
# (packaging/rpm/addrreg.spec) for each architecture.
#
#   packaging/build-rpm.sh VERSION ARCH...      (make dist)
#
# DIST (default dist/) is where the .debs are and the RPMs go; RPMBUILD
# (default build/rpm, emptied first) is the work. Outputs:
#   dist/<pkg>-<VERSION>-1.<rpmarch>.rpm     rpmarch: x86_64, aarch64
# In each, the OpenRC script is documentation
# (/usr/share/doc/<pkg>/openrc/<pkg>); the copyright is the licence file
# (/usr/share/licenses/<pkg>/copyright).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$1
shift
[ $# -gt 0 ] || set -- "$(dpkg --print-architecture)"
top=$PWD
dist=${DIST:-$top/dist}
work=${RPMBUILD:-$top/build/rpm}
rm -rf "$work"
mkdir -p "$work"

if git rev-parse --verify -q HEAD >/dev/null 2>&1; then
	epoch=$(git show -s --format=%ct HEAD)
	what="Snapshot of commit $(git rev-parse --short=12 HEAD)."
else
	epoch=$(stat -c %Y VERSION)
	what="Build outside git."
fi
# The spec with a %changelog entry for this build, dated by the commit.
spec=$work/addrreg.spec
{
	cat packaging/rpm/addrreg.spec
	printf '* %s addrreg developers <dev@addrreg.invalid> - %s-1\n- %s\n' \
		"$(LC_ALL=C date -u -d "@$epoch" '+%a %b %d %Y')" "$version" "$what"
} > "$spec"

for arch in "$@"; do
	case $arch in
	amd64) rpmarch=x86_64 ;;
	arm64) rpmarch=aarch64 ;;
	*) echo "build-rpm.sh: no RPM architecture for $arch" >&2; exit 2 ;;
	esac
	stage=$work/stage-$arch
	for pkg in addrregd addrreg-refserver dhcp6-shield; do
		root=$stage/$pkg
		mkdir -p "$root"
		dpkg-deb -x "$dist/${pkg}_${version}_${arch}.deb" "$root"
		rm -rf "$root/usr/share/lintian"
		if [ -d "$root/lib/systemd" ]; then
			mkdir -p "$root/usr/lib"
			mv "$root/lib/systemd" "$root/usr/lib/"
			rmdir "$root/lib"
		fi
		mkdir -p "$root/usr/share/licenses/$pkg"
		mv "$root/usr/share/doc/$pkg/copyright" "$root/usr/share/licenses/$pkg/"
		install -D -m 0644 "packaging/openrc/$pkg" "$root/usr/share/doc/$pkg/openrc/$pkg"
		# The tree rpmbuild reads, not the files' modes: directories 0755.
		find "$root" -type d -exec chmod 0755 {} +
	done
	echo "== rpmbuild --target $rpmarch ($version)"
	SOURCE_DATE_EPOCH=$epoch rpmbuild -bb --target "$rpmarch" \
		--define "_topdir $work/top" \
		--define "_rpmdir $dist" \
		--define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
		--define "_buildhost addrreg.invalid" \
		--define "use_source_date_epoch_as_buildtime 1" \
		--define "clamp_mtime_to_source_date_epoch 1" \
		--define "ver $version" \
		--define "stage $stage" \
		"$spec" >"$work/rpmbuild-$arch.log" 2>&1 || {
		tail -40 "$work/rpmbuild-$arch.log" >&2
		exit 1
	}
	ls -l "$dist"/*-"$version"-1."$rpmarch".rpm
done
