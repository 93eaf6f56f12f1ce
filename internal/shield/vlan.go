package shield

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// The kernel strips the outer VLAN tag of a received frame before packet
// taps see it (in software even without rx-vlan offload) and reports it in
// PACKET_AUXDATA. The switch puts it back before it classifies the frame,
// so that a tag cannot hide a message (SPEC §3), and forwards the frame as
// it arrived.

// vlanLen is the size of a VLAN tag (TPID and TCI).
const vlanLen = 4

// strippedTag returns the outer tag the kernel stripped, as PACKET_AUXDATA
// reports it; ok is false when there was none. An old kernel that does not
// report the TPID stripped an 802.1Q tag.
func strippedTag(aux *unix.TpacketAuxdata) (tpid, tci uint16, ok bool) {
	if aux.Status&unix.TP_STATUS_VLAN_VALID == 0 && aux.Vlan_tci == 0 {
		return 0, 0, false
	}
	tpid = etherType8021Q
	if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
		tpid = aux.Vlan_tpid
	}
	return tpid, aux.Vlan_tci, true
}

// insertTag re-inserts a stripped tag. buf holds vlanLen octets of headroom,
// a virtio-net header of hl octets (vnetLen, or 0 for none) and the frame,
// whose MAC addresses must be present. It moves the header and the MAC
// addresses into the headroom, writes the tag after them and returns all of
// buf: the header and the tagged frame. A checksum the header leaves to
// offload starts vlanLen octets later.
func insertTag(buf []byte, hl int, tpid, tci uint16) []byte {
	copy(buf[:hl+12], buf[vlanLen:vlanLen+hl+12]) // header and MAC addresses move back
	binary.BigEndian.PutUint16(buf[hl+12:], tpid)
	binary.BigEndian.PutUint16(buf[hl+14:], tci)
	if hl == vnetLen && buf[0]&vnetFlagNeedsCsum != 0 {
		// The checksum start counts from the frame's first octet.
		cs := binary.NativeEndian.Uint16(buf[vnetCsumStart:])
		binary.NativeEndian.PutUint16(buf[vnetCsumStart:], cs+vlanLen)
	}
	return buf
}
