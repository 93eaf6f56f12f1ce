package agent

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/addrreg/addrreg/netmon"
)

// A link that is removed and re-created (a USB NIC unplugged and plugged
// back, ip link del and add, a VM NIC hot-unplugged) takes its addresses
// with it, but not the server's bindings for them. The agent forgot them
// with the link; now each one is owed a deregistration that waits, in the
// state file's stale list, for a link of the same name (linkGone): when
// one appears and discovery finds support, an address not re-added within
// relinkGrace is deregistered (RFC 9686 §4.7), one re-added is only
// registered again. An entry whose binding has surely run out on the
// server (its valid lifetime has passed) is dropped: a name that never
// returns keeps nothing forever (dropStale).

const replugHW = "02:00:00:00:00:01"

// plug reports eth0 under ifindex index with the given hardware address,
// up or down.
func plug(h *harness, index int, hw string, up bool) {
	h.mon.send(netmon.Event{Kind: netmon.LinkAdded, Link: netmon.Link{Index: index, Name: "eth0", Up: up, LowerUp: up, Other: up, HardwareAddr: mustMAC(hw)}})
}

// unplug removes eth0 (ifindex index) as netmon reports it: the link
// goes, and its addresses with it (the kernel's lookups find none).
func unplug(h *harness, index int) {
	h.mon.mu.Lock()
	for ip, a := range h.mon.addrs {
		if a.Index == index {
			delete(h.mon.addrs, ip)
		}
	}
	h.mon.mu.Unlock()
	h.mon.send(netmon.Event{Kind: netmon.LinkRemoved, Link: netmon.Link{Index: index, Name: "eth0"}})
}

// on is a on ifindex index.
func on(index int, a netmon.Addr) netmon.Addr {
	a.Index = index
	return a
}

// registrations counts the registrations (not deregistrations) of ip sent.
func registrations(h *harness, ip string) int {
	_, sends := h.reg.snapshot()
	n := 0
	for _, s := range sends {
		if !s.deregistered && s.addr.String() == ip {
			n++
		}
	}
	return n
}

// startPlugged starts an agent with eth0 (ifindex 2) up, supported, and a
// stable and a temporary address registered.
func startPlugged(t *testing.T, cfg Config) (*harness, netmon.Addr, netmon.Addr) {
	t.Helper()
	h := start(t, cfg, true)
	plug(h, 2, replugHW, true)
	h.mon.add(ll)
	stable, tmp := stableAndTemporary()
	h.mon.add(stable)
	h.mon.add(tmp)
	h.settle()
	wantSends(t, h, "registered", false, false)
	return h, stable, tmp
}

func TestReplugDeregistersOnlyAddressesNotReAdded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		downUp   bool // the new link appears down, then comes up
		tempName bool // it appears under another name, renamed once down (ip link add … peer name)
		addrsGo  bool // netmon reports the link down and the addresses gone before the link
	}{
		{name: "appears up"},
		{name: "appears down then up", downUp: true},
		{name: "renamed into place", tempName: true},
		{name: "down and addresses removed first", addrsGo: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, stable, tmp := startPlugged(t, defaults())
			if tc.addrsGo {
				h.mon.link(false, false, false) // the kernel takes it down first
				h.mon.remove(ll)
				h.mon.remove(stable)
				h.mon.remove(tmp)
			}
			unplug(h, 2)
			h.advance(time.Minute) // unplugged for a minute: less than the 600 s told
			st := h.settle()
			wantSends(t, h, "while unplugged", false, false)
			if len(st.Interfaces) != 1 || st.Interfaces[0].Index != 0 || st.Interfaces[0].State != IfDown {
				t.Errorf("status while unplugged: %+v, want eth0 with no link (index 0), down", st.Interfaces)
			}
			for _, ip := range []string{"2001:db8::1", "2001:db8::2"} {
				if p := phaseOf(st, ip); p != Deregistering {
					t.Errorf("status while unplugged: %s phase %v, want deregistering", ip, p)
				}
			}
			for _, ip := range []string{"2001:db8::1", "2001:db8::2"} {
				if !inSnapshot(h, ip) {
					t.Errorf("unplugged: %s, whose binding the server holds, left the state file", ip)
				}
			}

			// Plugged back: a new ifindex, the same name and MAC.
			if tc.downUp {
				plug(h, 7, replugHW, false)
			}
			if tc.tempName {
				h.mon.send(netmon.Event{Kind: netmon.LinkAdded, Link: netmon.Link{Index: 7, Name: "arn4", HardwareAddr: mustMAC(replugHW)}})
				h.mon.send(netmon.Event{Kind: netmon.LinkRenamed, Link: netmon.Link{Index: 7, Name: "eth0", HardwareAddr: mustMAC(replugHW)}})
			}
			plug(h, 7, replugHW, true)
			h.mon.add(on(7, ll))
			h.advance(5 * time.Second)
			if got := deregistered(h); len(got) != 0 {
				t.Fatalf("deregistered %v before the grace (%v) ran out", got, relinkGrace)
			}
			h.mon.add(on(7, stable)) // SLAAC re-adds the stable address; the temporary one is gone
			h.advance(relinkGrace)
			h.settle()
			wantStableBackTemporaryGone(t, h, "replugged")
			if n := registrations(h, "2001:db8::1"); n != 2 {
				t.Errorf("re-added address registered %d times, want 2 (before and after the replug)", n)
			}
			if inSnapshot(h, "2001:db8::2") {
				t.Error("the deregistered address is still in the state file")
			}
			if !h.logged("address gone while the link was down or removed: deregistering unless it comes back") {
				t.Error("nothing logged about the deregistration that waited for the link")
			}
		})
	}
}

// The link comes back under the same name with another hardware address:
// another NIC, maybe on another network. As after a restart (claimStale),
// nothing is deregistered on it.
func TestReplugOtherNICUnderSameNameDeregistersNothing(t *testing.T) {
	h, _, _ := startPlugged(t, defaults())
	unplug(h, 2)
	plug(h, 7, "02:00:00:00:00:99", true)
	h.mon.add(on(7, ll))
	h.advance(time.Hour)
	h.settle()
	if got := deregistered(h); len(got) != 0 {
		t.Errorf("deregistered %v on another NIC", got)
	}
	if !h.logged("state file: address was registered on another link under this name: not deregistering") {
		t.Error("nothing logged about the other NIC")
	}
}

// A restart between the unplug and the replug loses nothing: the owed
// deregistrations are in the state file, with the link's hardware address
// and the bound of the server's binding.
func TestReplugThenRestartKeepsOwedDeregistrations(t *testing.T) {
	cfg := defaults()
	cfg.StatePath = filepath.Join(t.TempDir(), "state.json")
	h, stable, _ := startPlugged(t, cfg)
	unplug(h, 2)
	h.shutdown()
	saved, err := readState(cfg.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	if len(saved) != 2 {
		t.Fatalf("state file after a stop while unplugged: %+v, want both addresses", saved)
	}
	for _, sa := range saved {
		if sa.Iface != "eth0" || sa.HW != replugHW || sa.At.IsZero() || sa.Valid < 600 {
			t.Errorf("state file entry %+v: want eth0, %s, and the binding's bound (valid ≥ 600 s)", sa, replugHW)
		}
	}

	h = start(t, cfg, true)
	plug(h, 9, replugHW, false) // plugged back while the daemon starts
	plug(h, 9, replugHW, true)
	h.mon.add(on(9, ll))
	h.advance(time.Second)
	h.mon.add(on(9, stable))
	h.advance(relinkGrace)
	h.settle()
	wantStableBackTemporaryGone(t, h, "after the restart")
}

// A name that never returns: its entries stay owed while the server may
// hold the bindings, and are dropped, with a log line, once their valid
// lifetime has passed since they were last told — also across a restart.
// A static address's binding never runs out: it stays.
func TestUnpluggedForGoodIsDroppedAfterValidLifetime(t *testing.T) {
	cfg := defaults()
	cfg.StatePath = filepath.Join(t.TempDir(), "state.json")
	h, _, _ := startPlugged(t, cfg)
	static := global("2001:db8::3", netmon.Infinite)
	static.Class = netmon.ClassStatic
	h.mon.add(static)
	h.settle()
	registeredAt := h.clk.Now()
	unplug(h, 2)
	h.advance(5 * time.Minute)
	h.shutdown() // and restart, the NIC still away

	h = start(t, cfg, true)
	h.advanceTo(registeredAt.Add(600*time.Second - time.Second))
	for _, ip := range []string{"2001:db8::1", "2001:db8::2", "2001:db8::3"} {
		if !inSnapshot(h, ip) {
			t.Errorf("%s left the state file before its valid lifetime ran out", ip)
		}
	}
	if h.logged("state file: dropping a deregistration that waited for its link: the server's binding has run out") {
		t.Error("dropped before the valid lifetime ran out")
	}
	h.advance(2 * time.Second)
	for _, ip := range []string{"2001:db8::1", "2001:db8::2"} {
		if inSnapshot(h, ip) {
			t.Errorf("%s still in the state file after its valid lifetime ran out", ip)
		}
	}
	if !inSnapshot(h, "2001:db8::3") {
		t.Error("the static address, whose binding never runs out, left the state file")
	}
	if !h.logged("state file: dropping a deregistration that waited for its link: the server's binding has run out") {
		t.Error("nothing logged about the dropped entries")
	}
	h.advance(stateDebounce)
	saved, err := readState(cfg.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	if len(saved) != 1 || saved[0].Addr.String() != "2001:db8::3" {
		t.Errorf("state file %+v, want only the static address", saved)
	}
	wantSends(t, h, "nothing sent in the second run")
}

// An interface now excluded (--exclude, or left out of --interface) is
// never sent on: its entries from the last run are dropped once their
// bindings have run out, not kept forever.
func TestExcludedInterfaceEntriesDroppedAfterValidLifetime(t *testing.T) {
	cfg := defaults()
	cfg.StatePath = filepath.Join(t.TempDir(), "state.json")
	cfg.Exclude = []string{"eth1"}
	if err := writeState(cfg.StatePath, []savedAddr{
		{Iface: "eth1", HW: replugHW, Addr: netip.MustParseAddr("2001:db8:1::1"), Valid: 600, At: t0.Add(-100 * time.Second)},
		{Iface: "eth1", HW: replugHW, Addr: netip.MustParseAddr("2001:db8:1::2"), Valid: 3600, At: t0.Add(-100 * time.Second)},
	}); err != nil {
		t.Fatal(err)
	}
	h := start(t, cfg, true)
	h.mon.send(netmon.Event{Kind: netmon.LinkAdded, Link: netmon.Link{Index: 3, Name: "eth1", Up: true, LowerUp: true, Other: true, HardwareAddr: mustMAC(replugHW)}})
	h.mon.add(netmon.Addr{Index: 3, Ifname: "eth1", IP: netip.MustParseAddr("fe80::3"), PrefixLen: 64, Valid: netmon.Infinite,
		Preferred: netmon.Infinite, Class: netmon.ClassLinkLocal, State: netmon.StatePreferred})
	h.advance(499 * time.Second)
	if !inSnapshot(h, "2001:db8:1::1") || !inSnapshot(h, "2001:db8:1::2") {
		t.Error("an entry left the state file before its valid lifetime ran out")
	}
	h.advance(2 * time.Second)
	if inSnapshot(h, "2001:db8:1::1") {
		t.Error("2001:db8:1::1 still in the state file after its valid lifetime ran out")
	}
	if !inSnapshot(h, "2001:db8:1::2") {
		t.Error("2001:db8:1::2 left the state file before its valid lifetime ran out")
	}
	h.advance(time.Hour)
	if inSnapshot(h, "2001:db8:1::2") {
		t.Error("2001:db8:1::2 still in the state file after its valid lifetime ran out")
	}
	probes, sends := h.reg.snapshot()
	if probes != 0 || len(sends) != 0 {
		t.Errorf("excluded interface: %d probes, sends %+v, want none", probes, sends)
	}
}
