package agent_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/dhcp6test"
	"github.com/addrreg/addrreg/test/topo"
)

// The M/O condition lapses (RFC 9686 §4.1, read from the wire: the
// router's last RA has a short Router Lifetime, and then it is silent): no ADDR-REG-INFORM goes
// out while it is lapsed — neither the static address's refreshes nor a
// deregistration — and the server keeps the binding; the refresh that came
// due meanwhile goes at once when an RA with O is back.
func TestE2ERAFlagsLapse(t *testing.T) {
	l := newLab(t, labOpts{noRouter: true})
	l.host.Sysctl(t, "net.ipv6.conf.eth0.accept_ra", "0")
	l.host.WaitAddrs(t, "eth0", topo.LinkLocal, 10*time.Second)
	addr := netip.MustParseAddr("2001:db8:1::10")
	l.host.MustExec(t, "ip", "-6", "addr", "add", addr.String()+"/64", "dev", "eth0", "nodad")
	inj := newRAInjector(t, l.router)
	router := netip.MustParseAddr("fe80::1")
	p := l.startAgent(t, "--require-ra-flags=true", "--watch-ras=true", "--static-refresh=2s", "--coalesce=0s")
	p.WaitOutput(t, "registration supported on link", 15*time.Second)
	waitInformsWhile(t, l.sniff, addr, 30*time.Second, func() {
		inj.send(t, router, 255, false, true, 1800*time.Second)
	})
	l.waitBindings(t, addr.String()+" registered", 10*time.Second, func(b map[netip.Addr]dhcp6test.Binding) bool {
		_, ok := b[addr]
		return ok
	})
	l.sniff.WaitInforms(t, addr, 2, 15*time.Second) // refreshed every 2 s meanwhile

	inj.send(t, router, 255, false, true, 3*time.Second) // its last RA
	p.WaitOutput(t, "RA with M or O flag lapsed", 15*time.Second)
	// An exchange that started before the lapse may still be on the wire
	// for a moment; after that, nothing for three refresh intervals: no
	// refresh, and no deregistration (an INFORM with zero lifetimes).
	time.Sleep(time.Second)
	quiet := len(l.sniff.Informs(addr))
	time.Sleep(6 * time.Second)
	if got := l.sniff.Informs(addr); len(got) != quiet {
		t.Fatalf("ADDR-REG-INFORMs while the M/O condition had lapsed:\n%s", dhcp6test.List(got[quiet:]))
	}
	if _, ok := l.bindings(t)[addr]; !ok {
		t.Fatalf("the server lost %s during the lapse: no binding", addr)
	}

	backAt := time.Now()
	inj.send(t, router, 255, false, true, 1800*time.Second)
	got := l.sniff.WaitInforms(t, addr, quiet+1, 10*time.Second)
	if d := got[quiet].At.Sub(backAt); d > 5*time.Second {
		t.Errorf("the held refresh went %v after the RA came back, want at once", d)
	}
	if got[quiet].Valid == 0 {
		t.Errorf("the first INFORM after the lapse is a deregistration: %s", got[quiet])
	}
}
