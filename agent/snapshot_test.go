package agent

import (
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/addrreg/addrreg/netmon"
)

// What the server may hold, as the state file's snapshot (snapshot.go) and
// the live state keep it, across removal and re-adding, failures, the
// stop, re-discovery, renames and the last run's file. Several were found
// by the property test (property_test.go), each pinned by the smallest
// sequence that shows it.

// An address deregistered (removed) and then re-added and registered again
// is in the state file: the server holds it, so a restart that finds it
// gone must deregister it.
func TestStateKeepsReaddedAddress(t *testing.T) {
	cfg := defaults()
	cfg.StatePath = filepath.Join(t.TempDir(), "state.json")
	h := startOnLink(t, cfg, true)
	a := global("2001:db8::1", 600*time.Second)
	h.mon.add(a)
	h.settle()
	h.mon.remove(a)
	h.settle()
	h.mon.add(a)
	if p := phaseOf(h.settle(), "2001:db8::1"); p != Registered {
		t.Fatalf("phase = %v, want registered", p)
	}
	if _, sends := h.reg.snapshot(); len(sends) != 3 || !sends[1].deregistered {
		t.Fatalf("sends = %+v, want register, deregister, register", sends)
	}
	h.advance(stateDebounce)
	h.settle()
	h.shutdown()
	got, err := readState(cfg.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Addr != a.IP || got[0].Valid != 600 {
		t.Fatalf("state file = %+v, want 2001:db8::1 registered for 600 s", got)
	}
}

// What the server may hold decides both the state file and a live
// deregistration: an address whose failed exchanges sent nothing (every
// send refused, or the address was not found at the first transmission) is
// in neither; one whose INFORM went out but whose reply was lost is in both
// (the server may well have registered it).
func TestFailedAddressHeldOnlyIfSent(t *testing.T) {
	cfg := defaults()
	cfg.StatePath = filepath.Join(t.TempDir(), "state.json")
	h := startOnLink(t, cfg, true)
	never := global("2001:db8::1", 600*time.Second)
	h.mon.send(netmon.Event{Kind: netmon.AddrAdded, Addr: never}) // lookup misses: nothing sent
	h.settle()
	h.reg.mu.Lock()
	h.reg.fail = true // sent, no reply
	h.reg.mu.Unlock()
	lost := global("2001:db8::2", 600*time.Second)
	h.mon.add(lost)
	st := h.settle()
	if p1, p2 := phaseOf(st, "2001:db8::1"), phaseOf(st, "2001:db8::2"); p1 != Failed || p2 != Failed {
		t.Fatalf("phases %v, %v; want failed, failed", p1, p2)
	}
	h.advance(stateDebounce)
	h.settle()
	got, err := readState(cfg.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Addr != lost.IP {
		t.Errorf("state file = %+v, want only 2001:db8::2 (sent, reply lost)", got)
	}
	h.mon.remove(never)
	h.mon.remove(lost)
	h.settle()
	var dereg []netip.Addr
	_, sends := h.reg.snapshot()
	for _, s := range sends {
		if s.deregistered {
			dereg = append(dereg, s.addr)
		}
	}
	if len(dereg) != 1 || dereg[0] != lost.IP {
		t.Errorf("deregistered %v, want only 2001:db8::2", dereg)
	}
}

// A deregistration that the stop could not get out (its one send refused,
// or still in flight when StopTimeout ran out) stays in the last state
// file: the server still holds the binding, and the next start must
// deregister it. It was dropped: the stop took the address off the owed
// set when it started the deregistration, whatever became of it.
func TestStopKeepsUnsentDeregistrationInStateFile(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		h := startOnLink(t, defaults(), true)
		a := registerStatic(h, "2001:db8::1")
		refuse(h, true)
		h.mon.remove(a) // refused, owed again after Retry.First
		h.settle()
		if !inSnapshot(h, "2001:db8::1") {
			t.Fatal("the owed deregistration is not in the snapshot before the stop")
		}
		h.shutdown() // refused again
		if !inSnapshot(h, "2001:db8::1") {
			t.Fatal("after a stop whose deregistration was refused, the state file forgot the address the server holds")
		}
	})
	t.Run("abandoned", func(t *testing.T) {
		h := startOnLink(t, defaults(), true)
		a := global("2001:db8::1", time.Hour)
		h.mon.add(a)
		h.settle()
		h.reg.holdDereg = true
		h.mon.remove(a) // its deregistration hangs
		h.shutdown()    // abandoned
		if !inSnapshot(h, "2001:db8::1") {
			t.Fatal("after a stop that abandoned a deregistration, the state file forgot the address the server holds")
		}
	})
}

// Re-discovery (SIGHUP, or the link back after a carrier loss) asks the
// link afresh, but the server still holds what it was told: the address
// stays in the state file, and removed before it is registered again it is
// still owed its deregistration. Both were forgotten: leaving the link
// cleared what the server may hold, so while discovery waited for an
// answer (a server restarting: minutes of backoff) a removed address was
// never deregistered and a restart did not know of it.
func TestRediscoveryKeepsWhatTheServerHolds(t *testing.T) {
	for _, how := range []string{"sighup", "carrier"} {
		t.Run(how, func(t *testing.T) {
			h := startOnLink(t, defaults(), true)
			a := global("2001:db8::1", time.Hour)
			h.mon.add(a)
			h.settle()
			h.reg.blockProbe = true // discovery hangs: no answer yet
			switch how {
			case "sighup":
				h.deliver(evRediscover{})
			case "carrier":
				h.mon.link(false, false, true)
				h.mon.send(netmon.Event{Kind: netmon.LinkChanged, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true}})
			}
			if !inSnapshot(h, "2001:db8::1") {
				t.Error("re-discovering: the registered address left the state file")
			}
			h.mon.remove(a)
			h.idle()
			wantSends(t, h, "removed while re-discovering", false, true)
		})
	}
}

// An address removed and re-added before its deregistration got out
// (refused) never left, as far as the server knows: it still holds the
// binding. Removed again before a new registration got out, it is owed a
// deregistration; it was not (the re-added address started with nothing
// held), and the server kept the binding (for a static address, forever).
func TestReaddedAddressKeepsWhatTheServerHolds(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	a := registerStatic(h, "2001:db8::1")
	refuse(h, true)
	h.mon.remove(a) // deregistration refused: owed
	h.mon.add(a)    // back: cancelled; its registration is refused too
	if !inSnapshot(h, "2001:db8::1") {
		t.Error("re-added: the address the server holds left the state file")
	}
	h.mon.remove(a)
	refuse(h, false)
	h.advance(time.Hour)
	wantSends(t, h, "removed again", false, true)
}

// An interface renamed to a name the agent is told to leave alone, and
// back (or first seen under such a name: udev renames new interfaces),
// keeps its addresses: netmon reports an address once, not again at a
// rename. They were dropped, and a static address was never registered
// again.
func TestRenamedInterfaceKeepsItsAddresses(t *testing.T) {
	cfg := defaults()
	cfg.Exclude = []string{"tmp0"}
	h := startOnLink(t, cfg, true)
	a := global("2001:db8::1", netmon.Infinite)
	a.Class = netmon.ClassStatic
	h.mon.add(a)
	h.settle()
	link := func(kind netmon.EventKind, name string, up bool) {
		h.mon.send(netmon.Event{Kind: kind, Link: netmon.Link{Index: 2, Name: name, Up: up, LowerUp: up, Other: up}})
	}
	link(netmon.LinkUpdated, "eth0", false) // Linux renames only a down interface
	link(netmon.LinkRenamed, "tmp0", false)
	b := global("2001:db8::2", netmon.Infinite) // added under the excluded name
	b.Class, b.Ifname = netmon.ClassStatic, "tmp0"
	h.mon.add(b)
	link(netmon.LinkRenamed, "eth0", false)
	link(netmon.LinkChanged, "eth0", true)
	h.settle()
	_, sends := h.reg.snapshot()
	var got []netip.Addr
	for _, s := range sends {
		got = append(got, s.addr)
	}
	want := []netip.Addr{a.IP, a.IP, b.IP}
	slices.SortFunc(got, netip.Addr.Compare)
	if !slices.Equal(got, want) {
		t.Fatalf("registrations of %v, want %v: an address was lost at the rename", got, want)
	}
}

// An address from the last run's state file that is still assigned when
// discovery claims the file's entries is held by the server: if it goes
// before this run registers it (here the RA condition holds registration
// back), it is owed a deregistration, and it stays in the state file.
// Claimed, it was forgotten at once.
func TestClaimedStaleAddressStaysHeld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	hw := "02:00:00:00:00:01"
	if err := writeState(path, []savedAddr{{Iface: "eth0", HW: hw, Addr: netip.MustParseAddr("2001:db8::1"), Valid: 600}}); err != nil {
		t.Fatal(err)
	}
	cfg := defaults()
	cfg.StatePath = path
	h := start(t, cfg, true)
	h.writer = nil
	// No RA with M or O yet: nothing is registered.
	h.mon.send(netmon.Event{Kind: netmon.LinkAdded, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, HardwareAddr: mustMAC(hw)}})
	a := global("2001:db8::1", 600*time.Second)
	h.mon.add(a)
	h.mon.add(ll)
	h.settle()
	if !inSnapshot(h, "2001:db8::1") {
		t.Error("claimed: the address the server holds from the last run left the state file")
	}
	h.mon.remove(a)
	h.settle()
	wantSends(t, h, "removed before registered", true)
}
