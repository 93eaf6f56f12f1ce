package agent

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/addrreg/addrreg/netmon"
)

// Taking a link down (networkctl down, ip link set down) sets it admin
// down first; the kernel then flushes its addresses. Nothing can be sent
// then, and the addresses were forgotten: the server kept their bindings
// until their valid lifetime ran out (a static address's forever). Now
// each is owed a deregistration that waits for the link: once it is back
// and discovery finds support, the addresses get relinkGrace to come back
// (SLAAC re-adds the stable ones after the first RA); the ones that did
// not are deregistered (RFC 9686 §4.7), the others only registered again.

// linkDownFlush takes eth0 down as the kernel reports it: the link, then
// every address, the link-local one included.
func linkDownFlush(h *harness, addrs ...netmon.Addr) {
	h.mon.link(false, false, true)
	h.mon.remove(ll)
	for _, a := range addrs {
		h.mon.remove(a)
	}
}

// linkBack brings eth0 up again with its link-local address (discovery
// runs from it).
func linkBack(h *harness) {
	h.mon.link(true, false, true)
	h.mon.add(ll)
}

// deregistered lists the addresses deregistered so far, sorted.
func deregistered(h *harness) []string {
	_, sends := h.reg.snapshot()
	var out []string
	for _, s := range sends {
		if s.deregistered {
			out = append(out, s.addr.String())
		}
	}
	slices.Sort(out)
	return out
}

func stableAndTemporary() (netmon.Addr, netmon.Addr) {
	stable := global("2001:db8::1", 600*time.Second)
	tmp := global("2001:db8::2", 600*time.Second)
	tmp.Class = netmon.ClassTemporary
	return stable, tmp
}

func TestAddressRemovedWhileLinkDownIsDeregisteredWhenBack(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	stable, tmp := stableAndTemporary()
	static := global("2001:db8::3", netmon.Infinite)
	static.Class = netmon.ClassStatic
	for _, a := range []netmon.Addr{stable, tmp, static} {
		h.mon.add(a)
	}
	h.settle()
	wantSends(t, h, "registered", false, false, false)

	linkDownFlush(h, stable, tmp, static)
	h.advance(time.Minute) // less than the 600 s the server was told
	h.settle()
	wantSends(t, h, "while the link is down", false, false, false)
	for _, ip := range []string{"2001:db8::1", "2001:db8::2", "2001:db8::3"} {
		if !inSnapshot(h, ip) {
			t.Errorf("link down: %s, whose binding the server holds, left the state file", ip)
		}
	}

	if p := phaseOf(h.settle(), "2001:db8::2"); p != Deregistering {
		t.Errorf("status while the link is down: %s phase %v, want deregistering", "2001:db8::2", p)
	}

	linkBack(h)
	h.advance(5 * time.Second)
	if got := deregistered(h); len(got) != 0 {
		t.Fatalf("deregistered %v before the grace (%v) ran out", got, relinkGrace)
	}
	h.mon.add(stable) // SLAAC re-adds it after the first RA
	h.advance(relinkGrace)
	h.settle()
	if got, want := deregistered(h), []string{"2001:db8::2", "2001:db8::3"}; !slices.Equal(got, want) {
		t.Errorf("deregistered %v, want %v (the addresses that did not come back)", got, want)
	}
	if p := phaseOf(h.settle(), "2001:db8::1"); p != Registered {
		t.Errorf("re-added address: phase %v, want registered", p)
	}
	if inSnapshot(h, "2001:db8::2") || inSnapshot(h, "2001:db8::3") {
		t.Error("deregistered addresses are still in the state file")
	}
	if !h.logged("address gone while the link was down or removed: deregistering unless it comes back") {
		t.Error("nothing logged about the deregistration that waited for the link")
	}
}

// An address re-added while the link is still down, or after it is back
// but before discovery, is never deregistered.
func TestAddressBackBeforeDiscoveryIsNotDeregistered(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	stable, _ := stableAndTemporary()
	h.mon.add(stable)
	h.settle()
	linkDownFlush(h, stable)
	h.mon.add(stable) // while down (a manager adds it back before up)
	linkBack(h)
	h.advance(time.Hour)
	h.settle()
	if got := deregistered(h); len(got) != 0 {
		t.Errorf("deregistered %v, an address that came back", got)
	}
	if p := phaseOf(h.settle(), "2001:db8::1"); p != Registered {
		t.Errorf("phase %v, want registered", p)
	}
}

// The link does not come back: nothing is sent, the deregistration stays
// owed in the state file while the server may hold the binding; it goes
// out whenever the link is back. Once the binding's valid lifetime has
// run out there is nothing left to deregister: the entry is dropped
// (dropStale), so a link that never returns keeps nothing forever.
func TestLinkThatStaysDownKeepsDeregistrationOwed(t *testing.T) {
	for _, back := range []time.Duration{5 * time.Minute, 24 * time.Hour} {
		t.Run(back.String(), func(t *testing.T) {
			h := startOnLink(t, defaults(), true)
			_, tmp := stableAndTemporary() // valid 600 s
			h.mon.add(tmp)
			h.settle()
			linkDownFlush(h, tmp)
			h.advance(back)
			h.settle()
			wantSends(t, h, "while the link is down", false)
			expired := back > 600*time.Second
			if inSnapshot(h, "2001:db8::2") == expired {
				t.Errorf("down for %v (valid lifetime 600 s): in the state file %t, want %t", back, !expired, !expired)
			}
			linkBack(h)
			h.advance(relinkGrace)
			h.settle()
			if expired {
				wantSends(t, h, "back after the binding ran out", false)
			} else {
				wantSends(t, h, "back while the server holds the binding", false, true)
			}
		})
	}
}

// A restart while the link is down loses nothing: the owed deregistration
// is in the state file, and the next run sends it once the link is back
// and the grace ran out — not for an address that came back.
func TestRestartWhileLinkDownKeepsOwedDeregistration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	hw := "02:00:00:00:00:01"
	cfg := defaults()
	cfg.StatePath = path
	up := func(h *harness, on bool) {
		h.mon.send(netmon.Event{Kind: netmon.LinkAdded, Link: netmon.Link{Index: 2, Name: "eth0", Up: on, LowerUp: on, Other: on, HardwareAddr: mustMAC(hw)}})
	}
	h := start(t, cfg, true)
	up(h, true)
	h.mon.add(ll)
	stable, tmp := stableAndTemporary()
	h.mon.add(stable)
	h.mon.add(tmp)
	h.settle()
	up(h, false)
	h.mon.remove(ll)
	h.mon.remove(stable)
	h.mon.remove(tmp)
	h.shutdown()
	saved, err := readState(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(saved) != 2 {
		t.Fatalf("state file after a stop while the link is down: %+v, want both addresses", saved)
	}

	h = start(t, cfg, true)
	up(h, false) // started while the link is down
	up(h, true)
	h.mon.add(ll)
	h.advance(time.Second)
	h.mon.add(stable)
	h.advance(relinkGrace)
	h.settle()
	wantStableBackTemporaryGone(t, h, "after the restart")
}

// wantStableBackTemporaryGone checks that of stableAndTemporary's
// addresses the temporary one, gone, was deregistered (RFC 9686 §4.7), and
// the stable one, back, was not and is registered.
func wantStableBackTemporaryGone(t *testing.T, h *harness, what string) {
	t.Helper()
	if got, want := deregistered(h), []string{"2001:db8::2"}; !slices.Equal(got, want) {
		t.Errorf("%s: deregistered %v, want %v (the address that did not come back)", what, got, want)
	}
	if p := phaseOf(h.settle(), "2001:db8::1"); p != Registered {
		t.Errorf("%s: re-added address: phase %v, want registered", what, p)
	}
}
