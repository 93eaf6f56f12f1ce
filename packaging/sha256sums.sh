#!/usr/bin/env bash
# Writes DIST/SHA256SUMS (default dist/) for one version's release
# artefacts: the .debs, RPMs and tarball of each architecture. dist/ may
# hold other versions' files; they are not listed. Check with
#   cd dist && sha256sum -c SHA256SUMS
#
#   packaging/sha256sums.sh VERSION ARCH...      (make dist)
set -euo pipefail
cd "$(dirname "$0")/.."
version=$1
shift
dist=${DIST:-$PWD/dist}
files=()
for arch in "$@"; do
	case $arch in
	amd64) rpmarch=x86_64 ;;
	arm64) rpmarch=aarch64 ;;
	*) echo "sha256sums.sh: no RPM architecture for $arch" >&2; exit 2 ;;
	esac
	for pkg in addrregd addrreg-refserver dhcp6-shield; do
		files+=("${pkg}_${version}_${arch}.deb" "$pkg-$version-1.$rpmarch.rpm")
	done
	files+=("addrreg-$version-$arch.tar.gz")
done
cd "$dist"
sha256sum -- "${files[@]}" > SHA256SUMS.tmp
mv SHA256SUMS.tmp SHA256SUMS
echo "$dist/SHA256SUMS: ${#files[@]} files"
