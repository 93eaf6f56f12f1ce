package netmon

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/scheduler"
)

// FuzzApply feeds arbitrary datagrams to the parser and the state: nothing
// may panic, and the queue must drain.
//
//	go test -run '^$' -fuzz FuzzApply -fuzztime 30s ./netmon
func FuzzApply(f *testing.F) {
	for _, m := range []message{
		newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0),
		newLinkMsg(unix.RTM_NEWLINK, unix.AF_INET6, 2, "eth0", upFlags, ifRAManaged),
		newLinkMsg(unix.RTM_DELLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0),
		newAddrMsg(unix.RTM_NEWADDR, 2, "2001:db8::1", 64, 0, ProtoKernelRA, 1800, 3600),
		newAddrMsg(unix.RTM_DELADDR, 2, "2001:db8::1", 64, 0, ProtoKernelRA, 1800, 3600),
	} {
		f.Add(datagram(m))
	}
	f.Fuzz(func(t *testing.T, d []byte) {
		msgs, _ := parseDatagram(d)
		s := newState(ClassifyOptions{}, 8, time.Second)
		s.resync(msgs, t0)
		s.applyMessages(msgs, t0)
		for range 10000 {
			if _, ok := s.next(t0); !ok {
				return
			}
		}
		t.Fatal("queue does not drain")
	})
}

func datagram(m message) []byte {
	b := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(m.Data))
	b = append(b, m.Data...)
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:6], m.Type)
	return b
}

// FuzzRA feeds arbitrary ICMPv6 messages, sources and hop limits to the RA
// path: nothing may panic, the router table stays within its bound, and
// whatever mdlayher/ndp decodes as an RA (code 0) parseRA decodes alike.
//
//	go test -run '^$' -fuzz FuzzRA -fuzztime 30s ./netmon
func FuzzRA(f *testing.F) {
	ll := netip.MustParseAddr("fe80::1").As16()
	for _, b := range [][]byte{
		raBytes(f, true, true, time.Hour),
		raBytes(f, false, true, 0, &ndp.MTU{MTU: 1500}),
		raBytes(f, false, false, 1800*time.Second, &ndp.PrefixInformation{PrefixLength: 64, ValidLifetime: time.Hour,
			Prefix: netip.MustParseAddr("2001:db8::")}),
	} {
		f.Add(b, ll[:], uint8(255))
	}
	f.Fuzz(func(t *testing.T, b, src []byte, hop uint8) {
		ip, _ := netip.AddrFromSlice(src)
		ra, err := parseRA(b)
		if msg, nerr := ndp.ParseMessage(b); nerr == nil && len(b) > 1 && b[1] == 0 {
			if nra, ok := msg.(*ndp.RouterAdvertisement); ok {
				want := raInfo{managed: nra.ManagedConfiguration, other: nra.OtherConfiguration, lifetime: nra.RouterLifetime}
				if err != nil || ra != want {
					t.Fatalf("parseRA = %+v, %v; ndp says %+v", ra, err, want)
				}
			}
		}
		m := newMonitor(Options{Clock: scheduler.NewFakeClock(t0), MaxRouters: 2}, &fakeKernel{})
		m.st.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0), t0)
		for i := range 4 {
			ip := ip
			if ip.Is6() {
				a := ip.As16()
				a[15] += byte(i)
				ip = netip.AddrFrom16(a)
			}
			m.handleRA(2, ip, int(hop), b)
		}
		if st := m.Stats(); st.Routers > 2 {
			t.Fatalf("%d routers kept, bound 2", st.Routers)
		}
	})
}

// FuzzRACmsgs: the control data of a recvmsg, however malformed, never
// makes parseRACmsgs panic.
//
//	go test -run '^$' -fuzz FuzzRACmsgs -fuzztime 30s ./netmon
func FuzzRACmsgs(f *testing.F) {
	f.Add(cmsg(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, binary.NativeEndian.AppendUint32(nil, 255)))
	f.Add(cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, make([]byte, unix.SizeofInet6Pktinfo)))
	f.Fuzz(func(t *testing.T, oob []byte) {
		parseRACmsgs(oob)
	})
}
