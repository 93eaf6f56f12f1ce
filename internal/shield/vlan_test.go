package shield

import (
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestStrippedTag(t *testing.T) {
	type tag struct {
		TPID, TCI uint16
		OK        bool
	}
	for _, tc := range []struct {
		name string
		aux  unix.TpacketAuxdata
		want tag
	}{
		{"no tag", unix.TpacketAuxdata{}, tag{}},
		{"TPID valid alone is no tag", unix.TpacketAuxdata{Status: unix.TP_STATUS_VLAN_TPID_VALID, Vlan_tpid: 0x88a8}, tag{}},
		{"priority tag (VLAN 0)", unix.TpacketAuxdata{Status: unix.TP_STATUS_VLAN_VALID}, tag{0x8100, 0, true}},
		{"802.1Q", unix.TpacketAuxdata{Status: unix.TP_STATUS_VLAN_VALID | unix.TP_STATUS_VLAN_TPID_VALID, Vlan_tci: 100, Vlan_tpid: 0x8100}, tag{0x8100, 100, true}},
		{"802.1ad", unix.TpacketAuxdata{Status: unix.TP_STATUS_VLAN_VALID | unix.TP_STATUS_VLAN_TPID_VALID, Vlan_tci: 5, Vlan_tpid: 0x88a8}, tag{0x88a8, 5, true}},
		{"old kernel: TCI without status", unix.TpacketAuxdata{Vlan_tci: 7}, tag{0x8100, 7, true}},
		{"no TPID reported is 802.1Q", unix.TpacketAuxdata{Status: unix.TP_STATUS_VLAN_VALID, Vlan_tci: 9, Vlan_tpid: 0x88a8}, tag{0x8100, 9, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got tag
			got.TPID, got.TCI, got.OK = strippedTag(&tc.aux)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("strippedTag (-want +got):\n%s", diff)
			}
		})
	}
}

// vnetHdr is a virtio-net header; with csumStart > 0 it asks for a
// checksum (NEEDS_CSUM) from csumStart, stored at csumStart+6.
func vnetHdr(csumStart uint16) []byte {
	h := make([]byte, vnetLen)
	binary.NativeEndian.PutUint16(h[2:], 1514)
	if csumStart > 0 {
		h[0] = vnetFlagNeedsCsum
		binary.NativeEndian.PutUint16(h[vnetCsumStart:], csumStart)
		binary.NativeEndian.PutUint16(h[vnetCsumStart+2:], 6)
	}
	return h
}

func TestInsertTag(t *testing.T) {
	// Ethernet 14 + IPv6 40 + Hop-by-Hop 8: the UDP header.
	const udpAt = 14 + 40 + 8
	for _, tc := range []struct {
		name        string
		tpids       []uint16 // of the frame as sent; the first is stripped
		hdr, wantHd []byte
	}{
		{"802.1Q, no virtio-net header", []uint16{0x8100}, nil, nil},
		{"802.1ad over 802.1Q", []uint16{0x88a8, 0x8100}, nil, nil},
		{"virtio-net header, no checksum", []uint16{0x8100}, vnetHdr(0), vnetHdr(0)},
		{"virtio-net header, checksum moves by a tag", []uint16{0x8100}, vnetHdr(udpAt), vnetHdr(udpAt + vlanLen)},
		{"QinQ, checksum after the inner tag", []uint16{0x88a8, 0x8100}, vnetHdr(udpAt + 4), vnetHdr(udpAt + 4 + vlanLen)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent := build(tc.tpids, hbh(8), toClient(msgReply))
			tci := binary.BigEndian.Uint16(sent[14:])
			stripped := append(append([]byte{}, sent[:12]...), sent[16:]...)
			buf := make([]byte, vlanLen, vlanLen+len(tc.hdr)+len(stripped))
			buf = append(append(buf, tc.hdr...), stripped...)

			got := insertTag(buf, len(tc.hdr), tc.tpids[0], tci)
			want := append(append([]byte{}, tc.wantHd...), sent...)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("insertTag (-want +got):\n%s", diff)
			}
		})
	}
}
