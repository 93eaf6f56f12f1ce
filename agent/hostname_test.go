package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/addrreg/addrreg/registrar"
)

// The host's name in every exchange (Config.FQDN), and a rename
// (evHostName, from Config.HostNames) registers every registered address
// again at once with the new name: new exchanges, so new transaction IDs;
// deregistrations carry the current name too.
func TestHostNameFollowed(t *testing.T) {
	cfg := defaults()
	cfg.FQDN = "first.example.com"
	h := startOnLink(t, cfg, true)
	for i := 1; i <= 3; i++ {
		h.mon.add(global(fmt.Sprintf("2001:db8::%d", i), time.Hour))
	}
	h.settle()
	_, sends := h.reg.snapshot()
	if len(sends) != 3 {
		t.Fatalf("%d sends, want 3 registrations", len(sends))
	}
	for _, s := range sends {
		if s.fqdn != "first.example.com" {
			t.Errorf("%s registered with name %q, want first.example.com", s.addr, s.fqdn)
		}
	}
	before := h.report().Counters.Registrations

	h.advance(10 * time.Second)
	h.deliver(evHostName{"second"})
	st := h.settle()
	_, sends = h.reg.snapshot()
	again := sends[3:]
	if len(again) != 3 {
		t.Fatalf("after the rename %d sends %+v, want the 3 addresses registered again", len(again), again)
	}
	seen := map[netip.Addr]bool{}
	for _, s := range again {
		if s.fqdn != "second" || s.deregistered || !s.at.Equal(t0.Add(10*time.Second)) {
			t.Errorf("after the rename: %+v, want a registration with name second at once", s)
		}
		seen[s.addr] = true
	}
	if len(seen) != 3 {
		t.Errorf("re-registered %v, want each address once", seen)
	}
	if got := st.Counters.Registrations - before; got != 3 {
		t.Errorf("%d exchanges started for the rename, want 3 (one new transaction each)", got)
	}
	if !h.logged("host name changed: registering again") {
		t.Error("the rename was not logged")
	}

	// The same name again: nothing to do.
	h.deliver(evHostName{"second"})
	h.settle()
	if _, s := h.reg.snapshot(); len(s) != 6 {
		t.Fatalf("the same name again started %d exchanges", len(s)-6)
	}
	// No name (a host set to "localhost", or --send-hostname turned off
	// by a restart): registered again without the option.
	h.deliver(evHostName{""})
	h.settle()
	_, sends = h.reg.snapshot()
	if len(sends) != 9 {
		t.Fatalf("after the name went: %d sends, want 9", len(sends))
	}
	for _, s := range sends[6:] {
		if s.fqdn != "" {
			t.Errorf("after the name went: %+v carries a name", s)
		}
	}
	// A deregistration carries the current name.
	h.deliver(evHostName{"third"})
	h.settle()
	h.mon.remove(global("2001:db8::1", time.Hour))
	h.settle()
	_, sends = h.reg.snapshot()
	if last := sends[len(sends)-1]; !last.deregistered || last.fqdn != "third" {
		t.Errorf("deregistration %+v, want the name third", last)
	}
}

// A rename re-registers through the pacing queue: --rate bounds the burst
// as it does at start-up.
func TestHostNamePaced(t *testing.T) {
	cfg := defaults()
	cfg.FQDN = "a"
	cfg.Rate, cfg.Burst = 2, 1
	h := startOnLink(t, cfg, true)
	for i := 1; i <= 5; i++ {
		h.mon.add(global(fmt.Sprintf("2001:db8::%d", i), time.Hour))
	}
	h.advance(5 * time.Second)
	h.settle()
	h.advance(time.Minute)
	h.deliver(evHostName{"b"})
	renamed := h.clk.Now()
	h.advance(5 * time.Second)
	h.settle()
	_, sends := h.reg.snapshot()
	if len(sends) != 10 {
		t.Fatalf("%d sends, want 5 registrations and 5 after the rename", len(sends))
	}
	for i, s := range sends[5:] {
		want := renamed.Add(time.Duration(i) * 500 * time.Millisecond)
		if s.fqdn != "b" || !s.at.Equal(want) {
			t.Errorf("re-registration %d: name %q at %v, want b at %v (2/s)", i, s.fqdn, s.at.Sub(renamed), want.Sub(renamed))
		}
	}
}

// An exchange in flight when the host is renamed carries the old name: the
// address is registered again with the new one when it ends. A failed
// address keeps its backoff: its retry carries the new name.
func TestHostNameDuringExchangeAndAfterFailure(t *testing.T) {
	cfg := defaults()
	cfg.FQDN = "old"
	h := startOnLink(t, cfg, true)
	h.reg.silent = true
	a := global("2001:db8::1", time.Hour)
	h.mon.add(a)
	if st := h.idle(); phaseOf(st, "2001:db8::1") != Registering {
		t.Fatalf("status %+v, want the registration in flight", st)
	}
	h.deliver(evHostName{"new"})
	if len(h.xB) != 1 {
		t.Fatalf("%d exchanges in flight after the rename, want the one (not cancelled)", len(h.xB))
	}
	h.reg.silent = false
	for g, x := range h.xB {
		delete(h.xB, g)
		h.deliver(evResult{k: x.k, gen: x.gen, res: registrar.Result{Replied: true, Sends: 1, Preferred: 30 * time.Minute, Valid: time.Hour, LastSent: h.clk.Now()}})
	}
	h.settle()
	_, sends := h.reg.snapshot()
	if len(sends) != 2 || sends[0].fqdn != "old" || sends[1].fqdn != "new" {
		t.Fatalf("sends %+v, want the old name's exchange, then one with the new name", sends)
	}

	// A server that stops answering: the address fails, and a rename
	// does not bring its retry (30 s) forward.
	h.reg.fail = true
	h.deliver(evHostName{"newer"})
	h.settle()
	_, sends = h.reg.snapshot()
	if len(sends) != 3 || sends[2].fqdn != "newer" {
		t.Fatalf("sends %+v, want a third exchange with the name newer (failing)", sends)
	}
	failedAt := h.clk.Now()
	h.deliver(evHostName{"newest"})
	h.settle()
	if _, s := h.reg.snapshot(); len(s) != 3 {
		t.Fatalf("a rename brought a failed address's retry forward: %+v", s[3:])
	}
	h.reg.fail = false
	h.advance(31 * time.Second)
	h.settle()
	_, sends = h.reg.snapshot()
	if len(sends) != 4 || sends[3].fqdn != "newest" || sends[3].at.Sub(failedAt) != 30*time.Second {
		t.Fatalf("sends %+v, want the retry 30 s later with the name newest", sends)
	}
}

// fakeNames is a NameSource the test feeds; fail ends it with an error.
type fakeNames struct {
	ch   chan string
	fail chan error
}

func (f *fakeNames) Next(ctx context.Context) (string, error) {
	select {
	case n := <-f.ch:
		return n, nil
	case err := <-f.fail:
		return "", err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// The loop reads Config.HostNames in a goroutine of its own that ends with
// Run (goleak, in run); a source that fails is logged, not fatal.
func TestRunFollowsHostNames(t *testing.T) {
	names := &fakeNames{ch: make(chan string), fail: make(chan error)}
	cfg := defaults()
	cfg.FQDN, cfg.HostNames = "first", names
	r := run(t, cfg, true)
	r.mon.link(true, false, true)
	r.mon.add(ll)
	r.mon.add(global("2001:db8::1", time.Hour))
	r.wait("registered", 1)
	names.ch <- "second"
	r.wait("registered", 2)
	names.fail <- errors.New("poll: bad file descriptor")
	r.wait("host name no longer followed: registrations keep the last name", 1)
	r.mon.add(global("2001:db8::2", time.Hour))
	r.wait("registered", 3)
	_, sends := r.reg.snapshot()
	var got []string
	for _, s := range sends {
		got = append(got, s.addr.String()+" "+s.fqdn)
	}
	if want := []string{"2001:db8::1 first", "2001:db8::1 second", "2001:db8::2 second"}; !slices.Equal(got, want) {
		t.Errorf("sends %q, want %q", got, want)
	}
	if err := r.shutdown(); err != nil {
		t.Fatalf("Run = %v", err)
	}
}
