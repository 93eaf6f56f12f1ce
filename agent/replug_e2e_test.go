package agent_test

import (
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/addrreg/addrreg/test/dhcp6test"
)

// The host's NIC is unplugged and plugged back: its veth deleted and
// created again under the same name and hardware address (a new ifindex).
// The kernel's SLAAC adds the stable address again after the first RA;
// a static address is gone for good. The server still held both: the one
// that did not come back is deregistered once discovery on the new link
// has given it relinkGrace to return, the one that came back is only
// registered again — its binding never goes.
//
// Twice: with the agent following each step (the kernel reports the link
// down and its addresses gone before the link), and with the agent
// stopped (SIGSTOP) during the replug, as a busy daemon would be: netmon
// then reads the kernel's state afresh and reports only the old link
// removed and a new one (netmon/state.go), which the agent used to take
// as "forget everything on it".
func TestE2EReplug(t *testing.T) {
	for _, suspended := range []bool{false, true} {
		name := "followed"
		if suspended {
			name = "agent suspended"
		}
		t.Run(name, func(t *testing.T) { testE2EReplug(t, suspended) })
	}
}

func testE2EReplug(t *testing.T, suspend bool) {
	l := newLab(t, labOpts{})
	slaac := addrOf(l.globals(t, 1)[0])
	static := netip.MustParseAddr("2001:db8:1::99")
	l.host.MustExec(t, "ip", "-6", "addr", "add", static.String()+"/64", "dev", "eth0", "nodad")
	p := l.startAgent(t)
	l.waitBindings(t, "both addresses", 20*time.Second, dhcp6test.HoldsAll(slaac, static))
	// The state file (debounced) lists both before the unplug, though
	// nothing here depends on a restart.
	informs := len(l.sniff.Informs(slaac))

	if suspend {
		if err := p.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	l.host.Replug(t, "eth0")
	if suspend {
		if err := p.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	l.host.WaitAddrs(t, "eth0", func(a netlink.Addr) bool {
		return addrOf(a) == slaac && a.Flags&0x40 == 0 // IFA_F_TENTATIVE: DAD done
	}, 30*time.Second)
	p.WaitOutput(t, "interface removed", 10*time.Second)

	gone := l.waitBindings(t, static.String()+" deregistered", 60*time.Second, func(b map[netip.Addr]dhcp6test.Binding) bool {
		_, ok := b[static]
		return !ok
	})
	if _, ok := gone[slaac]; !ok {
		t.Errorf("%s, back on the new link, lost its binding:\n%s", slaac, l.sniff.Dump())
	}
	var dereg bool
	for _, m := range l.sniff.Informs(static) {
		dereg = dereg || (m.Valid == 0 && m.Preferred == 0)
	}
	if !dereg {
		t.Errorf("no deregistration of %s on the wire:\n%s", static, l.sniff.Dump())
	}
	// Registered again on the new link, never deregistered.
	l.sniff.WaitInforms(t, slaac, informs+1, 30*time.Second)
	for _, m := range l.sniff.Informs(slaac) {
		if m.Valid == 0 {
			t.Errorf("%s, back after the replug, was deregistered: %v", slaac, m)
		}
	}
	l.waitBindings(t, slaac.String()+" held", 10*time.Second, dhcp6test.HoldsAll(slaac))
	if out := p.Output(); !strings.Contains(out, "deregistering unless it comes back") {
		t.Errorf("addrregd did not log the deregistration waiting for the address to come back:\n%s", out)
	}
}
