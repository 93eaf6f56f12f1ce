package netmon

import (
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/sys/unix"
)

// RAs seen on the wire set the link's flags (any router's last RA) and
// report their PIOs; a reconnect forgets them.
func TestWireRA(t *testing.T) {
	m := newMonitor(Options{Now: func() time.Time { return t0 }}, &fakeKernel{})
	m.st.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0), t0)
	drain(m.st, t0)
	r1, r2 := netip.MustParseAddr("fe80::1"), netip.MustParseAddr("fe80::2")
	m.wireRA(2, r1, &ndp.RouterAdvertisement{OtherConfiguration: true, Options: []ndp.Option{
		&ndp.PrefixInformation{PrefixLength: 64, OnLink: true, AutonomousAddressConfiguration: true,
			ValidLifetime: ndp.Infinity, PreferredLifetime: time.Hour, Prefix: netip.MustParseAddr("2001:db8:1::")},
	}})
	m.wireRA(2, r2, &ndp.RouterAdvertisement{ManagedConfiguration: true})
	m.wireRA(2, r2, &ndp.RouterAdvertisement{ManagedConfiguration: true})
	evs := drain(m.st, t0)
	if len(evs) != 2 || evs[0].Kind != RAFlags || !evs[0].Link.Managed || !evs[0].Link.Other || !evs[0].Link.RAReceived ||
		evs[1].Kind != PrefixInfo || evs[1].Prefix.Valid != Infinite || evs[1].Prefix.Preferred != time.Hour || !evs[1].Prefix.Autonomous {
		t.Fatalf("events %q", kinds(evs))
	}
	// Router 2 drops M: router 1 never set it.
	m.wireRA(2, r2, &ndp.RouterAdvertisement{})
	if evs := drain(m.st, t0); len(evs) != 1 || evs[0].Link.Managed || !evs[0].Link.Other {
		t.Fatalf("after M cleared: %q", kinds(evs))
	}
	// Carrier down and up: nothing from the wire holds any more.
	m.st.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", unix.IFF_UP, 0), t0)
	m.st.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0), t0)
	evs = drain(m.st, t0)
	if len(evs) != 1 || evs[0].Kind != LinkChanged || evs[0].Link.Other || evs[0].Link.RAReceived {
		t.Fatalf("after reconnect: %v", evs)
	}
	// An RA for an unknown interface is ignored.
	m.wireRA(9, r1, &ndp.RouterAdvertisement{ManagedConfiguration: true})
	if evs := drain(m.st, t0); len(evs) != 0 {
		t.Fatalf("unknown interface: %q", kinds(evs))
	}
}

// The kernel's flags are stale after a reconnect until it reports an RA.
func TestKernelFlagsStaleAfterReconnect(t *testing.T) {
	s := newState(ClassifyOptions{}, 4096, time.Second)
	s.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0), t0)
	s.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_INET6, 2, "eth0", upFlags, ifRAManaged), t0)
	drain(s, t0)
	s.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", unix.IFF_UP, 0), t0)
	s.apply(newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0), t0)
	// A resync's dump still shows the old flags: not evidence of an RA.
	s.resync([]message{
		newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0),
		newLinkMsg(unix.RTM_NEWLINK, unix.AF_INET6, 2, "eth0", upFlags, ifRAManaged),
	}, t0)
	evs := drain(s, t0)
	if len(evs) != 1 || evs[0].Kind != LinkChanged || evs[0].Link.Managed {
		t.Fatalf("after reconnect: %q %v", kinds(evs), evs)
	}
	// The kernel processes an RA with a PIO: the flags count again.
	p := make([]byte, sizeofPrefixmsg)
	p[0] = unix.AF_INET6
	p[4] = 2
	p[9] = 64
	pa := netip.MustParseAddr("2001:db8::").As16()
	p = appendAttr(p, prefixAddress, pa[:])
	p = appendAttr(p, prefixCacheinfo, make([]byte, 8))
	s.apply(message{Type: unix.RTM_NEWPREFIX, Data: p}, t0)
	evs = drain(s, t0)
	if len(evs) != 2 || evs[0].Kind != RAFlags || !evs[0].Link.Managed || evs[1].Kind != PrefixInfo {
		t.Fatalf("after the RA: %q", kinds(evs))
	}
}
