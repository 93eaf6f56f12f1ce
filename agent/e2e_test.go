package agent_test

import (
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/vishvananda/netlink"

	"github.com/addrreg/addrreg/test/dhcp6test"
	"github.com/addrreg/addrreg/test/topo"
)

// Stable, temporary and ULA addresses are each registered from their own
// source address, each in one ADDR-REG-INFORM that follows SPEC.md §1.
func TestE2EFirstRegistration(t *testing.T) {
	l := newLab(t, labOpts{tempaddr: true, ra: topo.RA{Other: true, Prefixes: []topo.PIO{
		{Prefix: prefix1, Valid: 600 * time.Second, Preferred: 300 * time.Second},
		{Prefix: ula1, Valid: 900 * time.Second, Preferred: 450 * time.Second},
	}}})
	addrs := l.globals(t, 4) // stable + temporary in each prefix
	l.startAgent(t)
	for _, a := range addrs {
		ip := addrOf(a)
		m := l.sniff.WaitInforms(t, ip, 1, 10*time.Second)[0]
		if m.Src != ip {
			t.Errorf("INFORM for %s sent from %s", ip, m.Src)
		}
		if m.Dst != netip.MustParseAddr("ff02::1:2") {
			t.Errorf("INFORM for %s sent to %s", ip, m.Dst)
		}
		if m.Msg.Options.ClientID() == nil || m.Msg.Options.ServerID() != nil || m.Msg.Options.Get(dhcpv6.OptionORO) != nil {
			t.Errorf("INFORM for %s: want Client ID, no Server ID, no ORO: %v", ip, m.Msg.Options)
		}
		if n := len(m.Msg.Options.Get(dhcpv6.OptionIAAddr)); n != 1 {
			t.Errorf("INFORM for %s carries %d IA Address options", ip, n)
		}
		// Lifetimes are the kernel's current ones: at most radvd's.
		if m.Valid == 0 || m.Valid > 900 || m.Preferred > m.Valid {
			t.Errorf("INFORM for %s: lifetimes %d/%d", ip, m.Preferred, m.Valid)
		}
	}
	b := l.waitBindings(t, "all four addresses", 10*time.Second, func(b map[netip.Addr]dhcp6test.Binding) bool {
		for _, a := range addrs {
			if _, ok := b[addrOf(a)]; !ok {
				return false
			}
		}
		return true
	})
	for ip, bd := range b {
		if bd.DUID != testDUID {
			t.Errorf("binding %s has DUID %s", ip, bd.DUID)
		}
	}

	// A new address is registered within a second of DAD completing.
	static := netip.MustParseAddr("2001:db8:1::77")
	l.host.MustExec(t, "ip", "-6", "addr", "add", static.String()+"/64", "dev", "eth0")
	var dadDone time.Time
	for deadline := time.Now().Add(5 * time.Second); dadDone.IsZero(); {
		for _, a := range must(l.host.Addrs("eth0")) {
			if addrOf(a) == static && a.Flags&0x40 == 0 {
				dadDone = time.Now()
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("DAD of the static address did not complete")
		}
		time.Sleep(5 * time.Millisecond)
	}
	m := l.sniff.WaitInforms(t, static, 1, 3*time.Second)[0]
	if d := m.At.Sub(dadDone); d > time.Second {
		t.Errorf("INFORM for %s came %v after DAD completed, want < 1s", static, d)
	}
	if m.Valid != 0xffffffff {
		t.Errorf("static address registered with valid lifetime %d, want infinite", m.Valid)
	}
}

// No RA with M or O: nothing registered. A /128 with finite lifetimes, the
// way a DHCPv6 client adds one, is never registered either.
func TestE2ENoRegistration(t *testing.T) {
	t.Run("RA without M or O", func(t *testing.T) {
		l := newLab(t, labOpts{ra: topo.RA{Prefixes: []topo.PIO{{Prefix: prefix1, Valid: 600 * time.Second, Preferred: 300 * time.Second}}}})
		l.globals(t, 1)
		p := l.startAgent(t)
		p.WaitOutput(t, "registration supported on link", 10*time.Second)
		time.Sleep(3 * time.Second)
		if n := len(l.sniff.Informs(netip.Addr{})); n != 0 {
			t.Fatalf("%d ADDR-REG-INFORMs without an RA with M or O", n)
		}
	})
	t.Run("DHCPv6-assigned /128", func(t *testing.T) {
		l := newLab(t, labOpts{})
		l.globals(t, 1)
		l.startAgent(t)
		dhcp := netip.MustParseAddr("2001:db8:1::d:1")
		l.host.MustExec(t, "ip", "-6", "addr", "add", dhcp.String()+"/128", "dev", "eth0", "valid_lft", "300", "preferred_lft", "200")
		// A control added after it proves the agent is registering.
		control := netip.MustParseAddr("2001:db8:1::c")
		l.host.MustExec(t, "ip", "-6", "addr", "add", control.String()+"/64", "dev", "eth0", "nodad")
		l.sniff.WaitInforms(t, control, 1, 10*time.Second)
		time.Sleep(time.Second)
		if got := l.sniff.Informs(dhcp); len(got) != 0 {
			t.Fatalf("DHCPv6-assigned address registered: %v", got)
		}
	})
	t.Run("--include-prefix overrides the DHCPv6 rule", func(t *testing.T) {
		l := newLab(t, labOpts{})
		l.globals(t, 1)
		l.startAgent(t, "--include-prefix", "2001:db8:1::d:0/112")
		dhcp := netip.MustParseAddr("2001:db8:1::d:1")
		l.host.MustExec(t, "ip", "-6", "addr", "add", dhcp.String()+"/128", "dev", "eth0", "valid_lft", "300", "preferred_lft", "200")
		l.sniff.WaitInforms(t, dhcp, 1, 10*time.Second)
	})
	t.Run("enable=false", func(t *testing.T) {
		l := newLab(t, labOpts{})
		l.globals(t, 1)
		p := l.startAgent(t, "--enable=false")
		p.WaitOutput(t, "agent started", 5*time.Second)
		time.Sleep(3 * time.Second)
		for _, m := range l.sniff.All() {
			if m.Src.IsLinkLocalUnicast() || m.Type == dhcpv6.MessageTypeAddrRegInform {
				t.Fatalf("--enable=false sent %v", m)
			}
		}
	})
}

// Lifetimes counting down in step (radvd DecrementLifetimes) cause no
// refresh; a change of the advertised valid lifetime does, with the new
// lifetime in the IA Address and on the server.
func TestE2ERefresh(t *testing.T) {
	// radvd decrements in whole seconds since its last RA: with sub-second
	// intervals it stalls, so advertise every 2.25-3 s here.
	ra := topo.RA{Other: true, Interval: 3 * time.Second, Prefixes: []topo.PIO{{Prefix: prefix1, Valid: 100 * time.Second, Preferred: 50 * time.Second, DecrementLifetimes: true}}}
	l := newLab(t, labOpts{ra: ra})
	ip := addrOf(l.globals(t, 1)[0])
	// Cap the interval so NextAddrRegRefreshTime passes within the test:
	// only a lifetime change may then trigger the refresh.
	l.startAgent(t, "--max-refresh", "2s")
	l.sniff.WaitInforms(t, ip, 1, 10*time.Second)
	time.Sleep(7 * time.Second) // several RAs, each with lifetimes counted down
	if got := l.sniff.Informs(ip); len(got) != 1 {
		t.Fatalf("%d INFORMs while lifetimes count down in step, want 1:\n%s", len(got), l.sniff.Dump())
	}
	ra.Prefixes[0].Valid, ra.Prefixes[0].Preferred, ra.Prefixes[0].DecrementLifetimes = 300*time.Second, 200*time.Second, false
	l.radvd.Update(t, ra)
	got := l.sniff.WaitInforms(t, ip, 2, 8*time.Second)
	if v := got[1].Valid; v < 295 || v > 300 {
		t.Errorf("refresh carries valid lifetime %d, want about 300", v)
	}
	if got[1].XID == got[0].XID {
		t.Errorf("refresh reused transaction ID %s", got[0].XID)
	}
	l.waitBindings(t, "the new lifetime", 5*time.Second, func(b map[netip.Addr]dhcp6test.Binding) bool { return b[ip].Valid > 250 })
}

// An address removed from the interface is deregistered: the server drops
// the binding at once.
func TestE2EDeregistration(t *testing.T) {
	l := newLab(t, labOpts{})
	l.globals(t, 1)
	l.startAgent(t)
	static := netip.MustParseAddr("2001:db8:1::99")
	l.host.MustExec(t, "ip", "-6", "addr", "add", static.String()+"/64", "dev", "eth0", "nodad")
	l.waitBindings(t, static.String(), 10*time.Second, func(b map[netip.Addr]dhcp6test.Binding) bool { _, ok := b[static]; return ok })
	// Deprecation is not removal: nothing is sent.
	l.host.MustExec(t, "ip", "-6", "addr", "change", static.String()+"/64", "dev", "eth0", "preferred_lft", "0", "valid_lft", "600")
	time.Sleep(500 * time.Millisecond)
	for _, m := range l.sniff.Informs(static) {
		if m.Valid == 0 {
			t.Fatalf("deprecated address deregistered: %v", m)
		}
	}
	l.host.MustExec(t, "ip", "-6", "addr", "del", static.String()+"/64", "dev", "eth0")
	var dereg dhcp6test.Packet
	for deadline := time.Now().Add(5 * time.Second); !dereg.At.IsZero() == false; {
		for _, m := range l.sniff.Informs(static) {
			if m.Valid == 0 && m.Preferred == 0 {
				dereg = m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no deregistration of %s:\n%s", static, l.sniff.Dump())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if dereg.Src != static {
		t.Errorf("deregistration sent from %s, want %s", dereg.Src, static)
	}
	l.waitBindings(t, "the binding gone", 5*time.Second, func(b map[netip.Addr]dhcp6test.Binding) bool { _, ok := b[static]; return !ok })
}

// SIGTERM: bindings stay, unless --deregister-on-stop; exit within 2 s.
func TestE2EStop(t *testing.T) {
	for _, dereg := range []bool{false, true} {
		name := "keep"
		if dereg {
			name = "deregister-on-stop"
		}
		t.Run(name, func(t *testing.T) {
			l := newLab(t, labOpts{})
			ip := addrOf(l.globals(t, 1)[0])
			var args []string
			if dereg {
				args = append(args, "--deregister-on-stop")
			}
			p := l.startAgent(t, args...)
			l.waitBindings(t, ip.String(), 10*time.Second, func(b map[netip.Addr]dhcp6test.Binding) bool { _, ok := b[ip]; return ok })
			start := time.Now()
			if err := p.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := p.Wait(t, 3*time.Second); err != nil {
				t.Fatalf("addrregd exited with %v", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("addrregd took %v to stop, want < 2s", d)
			}
			time.Sleep(300 * time.Millisecond)
			_, held := l.bindings(t)[ip]
			if held == dereg {
				t.Errorf("after SIGTERM with deregister-on-stop=%v the server holds the binding: %v", dereg, held)
			}
		})
	}
}

// Carrier down and up: discovery runs afresh and every address is
// registered again.
func TestE2ECarrierRediscovery(t *testing.T) {
	l := newLab(t, labOpts{})
	ip := addrOf(l.globals(t, 1)[0])
	p := l.startAgent(t)
	l.sniff.WaitInforms(t, ip, 1, 10*time.Second)
	irs := l.sniff.Count(dhcpv6.MessageTypeInformationRequest)
	l.host.SetCarrier(t, "eth0", false)
	time.Sleep(300 * time.Millisecond)
	l.host.SetCarrier(t, "eth0", true)
	l.sniff.WaitInforms(t, ip, 2, 15*time.Second)
	if n := l.sniff.Count(dhcpv6.MessageTypeInformationRequest); n <= irs {
		t.Errorf("no new Information-Request after carrier came back (%d before, %d after)", irs, n)
	}
	if !strings.Contains(p.Output(), "interface down") {
		t.Errorf("agent log does not show the carrier loss")
	}
}

// SIGHUP: discovery runs afresh on every interface and the addresses are
// registered again; SIGUSR1 logs the state.
func TestE2ESignals(t *testing.T) {
	l := newLab(t, labOpts{})
	ip := addrOf(l.globals(t, 1)[0])
	p := l.startAgent(t)
	p.WaitOutput(t, "msg=registered", 10*time.Second)
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	p.WaitOutput(t, "phase=registered", 5*time.Second)
	irs := l.sniff.Count(dhcpv6.MessageTypeInformationRequest)
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	l.sniff.WaitInforms(t, ip, 2, 10*time.Second)
	if n := l.sniff.Count(dhcpv6.MessageTypeInformationRequest); n <= irs {
		t.Errorf("no new Information-Request after SIGHUP (%d before, %d after)", irs, n)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

var _ = netlink.Addr{}
