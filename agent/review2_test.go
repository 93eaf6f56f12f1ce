package agent

import (
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/scheduler"
)

// Defects found by the property test (property_test.go), each pinned by
// the smallest sequence that shows it.

// registerStatic adds a static address and lets it register.
func registerStatic(h *harness, ip string) netmon.Addr {
	a := global(ip, netmon.Infinite)
	a.Class = netmon.ClassStatic
	h.mon.add(a)
	h.settle()
	return a
}

// refuse makes every send fail (fakeReg.refuse), or not.
func refuse(h *harness, on bool) {
	h.reg.mu.Lock()
	h.reg.refuse = on
	h.reg.mu.Unlock()
}

// wantSends checks what went out: a registration (false) or a
// deregistration (true), in order.
func wantSends(t *testing.T, h *harness, what string, dereg ...bool) {
	t.Helper()
	_, sends := h.reg.snapshot()
	got := make([]bool, len(sends))
	for i, s := range sends {
		got[i] = s.deregistered
	}
	if !slices.Equal(got, dereg) {
		t.Errorf("%s: sends = %+v, want deregistered = %v", what, sends, dereg)
	}
}

func inSnapshot(h *harness, ip string) bool {
	return slices.ContainsFunc(h.m.snapshot(), func(sa savedAddr) bool { return sa.Addr == netip.MustParseAddr(ip) })
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

// A deregistration owed (the address removed while the link was up, its
// send refused) whose retry comes due while the carrier is lost is still
// owed when the link is back. It was dropped at that retry: the server
// kept the binding (for a static address, forever).
func TestOwedDeregistrationSurvivesCarrierLoss(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	a := registerStatic(h, "2001:db8::1")
	refuse(h, true) // and so is every send while the link is down
	h.mon.remove(a)
	h.mon.link(false, false, true)
	h.advance(time.Hour) // the retry comes due, and fails
	refuse(h, false)
	h.mon.send(netmon.Event{Kind: netmon.LinkChanged, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, Other: true}})
	h.advance(time.Hour)
	wantSends(t, h, "the link back", false, true)
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

// Discovery on a reconnected link starts afresh (RFC 9686 §4.1), its
// backoff too: after a long outage had pushed the probe retries to an
// hour, a link that comes back and whose first probe fails is asked again
// after Retry.First, not after the hour it had reached before.
func TestReconnectResetsProbeBackoff(t *testing.T) {
	h := start(t, defaults(), true)
	h.reg.probeErr = errors.New("probe eth0: no reply")
	h.mon.link(true, false, true)
	h.mon.add(ll)
	h.advance(6 * time.Hour) // failures 1…: 30 s, 1 min, … 1 h
	h.mon.link(false, false, true)
	h.mon.send(netmon.Event{Kind: netmon.LinkChanged, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, Other: true}})
	before, _ := h.reg.snapshot()
	h.advance(scheduler.DefaultRetryFirst)
	if p, _ := h.reg.snapshot(); p != before+1 {
		t.Fatalf("%d probes %v after the reconnection's failed one, want 1", p-before, scheduler.DefaultRetryFirst)
	}
}
