// Package image holds the booted-image test: build-image.sh makes a minimal
// Debian disk image with the addrregd package installed the way an image
// builder does (debootstrap, `dpkg -i` in a chroot, `mkfs.ext4 -d`), one per
// release (make image builds Debian 12, bookworm, and Debian 13, trixie),
// and the test boots them under QEMU (TCG) on tap devices in a test/topo
// network where radvd (M and O flags), Debian's Kea 2.2 (serving IA_NA) and
// addrreg-refserver run, then checks what a user of the image would see: the
// service enabled and running, nothing sent when the image's
// /etc/default/addrregd says --enable=false, one DUID per booted guest, and
// for each release and each of three ways the NIC is configured — the
// kernel's own SLAAC (the image as built), systemd-networkd
// (rootfs/etc/systemd/network) and NetworkManager (its default wired
// connection), picked per boot on the kernel command line — the manager's
// stable and temporary addresses in the server's bindings, registered with
// the guest's host name and again with the new one after `hostnamectl
// set-hostname`, its DHCPv6 IA_NA address never registered, and the
// registrations released when the connection is taken down.
//
// The guest answers the test over a virtio serial port ("addrreg.control",
// served by /usr/local/sbin/addrreg-image-control in the image); its console
// (ttyS0) goes to a file that the test log shows when a boot fails.
//
// `make test` builds the images once (make image) and passes their parent
// directory in ADDRREG_IMAGE_DIR (one directory per release in it); without
// it the test runs `make image` itself.
package image
