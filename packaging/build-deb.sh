#!/usr/bin/env bash
# Builds dist/addrregd_VERSION_ARCH.deb from bin/addrregd with dpkg-deb.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-0.0.0}
# Debian versions must start with a digit.
[[ $version =~ ^[0-9] ]] || version="0.0.0+git${version//[^A-Za-z0-9.+~]/.}"
arch=$(dpkg --print-architecture)
root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
install -D -m 0755 bin/addrregd "$root/usr/sbin/addrregd"
install -D -m 0644 packaging/addrregd.service "$root/lib/systemd/system/addrregd.service"
install -D -m 0644 packaging/addrregd.default "$root/etc/default/addrregd"
install -D -m 0644 LICENSE "$root/usr/share/doc/addrregd/copyright"
mkdir -p "$root/DEBIAN"
echo /etc/default/addrregd > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/control" <<CONTROL
Package: addrregd
Version: $version
Architecture: $arch
Maintainer: addrreg developers <dev@addrreg.invalid>
Section: net
Priority: optional
Description: IPv6 address registration agent (RFC 9686)
 Registers the host's self-generated IPv6 addresses (SLAAC, temporary,
 ULA, static) with the network's DHCPv6 server, so that DHCP logs record
 which host holds which address. Enabled by default; --enable=false
 in /etc/default/addrregd disables sending.
CONTROL
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	systemctl enable --now addrregd.service >/dev/null 2>&1 || true
fi
POSTINST
cat > "$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl disable --now addrregd.service >/dev/null 2>&1 || true
fi
PRERM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm"
mkdir -p dist
dpkg-deb --root-owner-group --build "$root" "dist/addrregd_${version}_${arch}.deb"
