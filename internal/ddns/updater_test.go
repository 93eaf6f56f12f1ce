package ddns

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/addrreg/addrreg/scheduler"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a1 = netip.MustParseAddr("2001:db8:1::1")
	dA = []byte{0, 3, 0, 1, 1}
	dB = []byte{0, 3, 0, 1, 2}
)

func TestMerge(t *testing.T) {
	own := func(n string, d []byte, ttl uint32) Owner { return Owner{Name: n, DUID: d, TTL: ttl} }
	for _, tc := range []struct {
		name    string
		changes []Change
		want    Pending
	}{
		{name: "register", changes: []Change{{Addr: a1, Name: "h.", DUID: dA}},
			want: Pending{Addr: a1, Since: t0, Want: &Owner{Name: "h.", DUID: dA, TTL: 60}}},
		{name: "register, deregister", changes: []Change{{Addr: a1, Name: "h.", DUID: dA}, {Addr: a1, PrevName: "h.", PrevDUID: dA}},
			want: Pending{Addr: a1, Since: t0, Drop: []Owner{own("h.", dA, 0)}}},
		{name: "deregister, register again", changes: []Change{{Addr: a1, PrevName: "h.", PrevDUID: dA}, {Addr: a1, Name: "h.", DUID: dA}},
			want: Pending{Addr: a1, Since: t0, Want: &Owner{Name: "h.", DUID: dA, TTL: 60}}},
		{name: "rename twice", changes: []Change{
			{Addr: a1, Name: "h2.", DUID: dA, PrevName: "h1.", PrevDUID: dA},
			{Addr: a1, Name: "h3.", DUID: dA, PrevName: "h2.", PrevDUID: dA}},
			want: Pending{Addr: a1, Since: t0, Want: &Owner{Name: "h3.", DUID: dA, TTL: 60}, Drop: []Owner{own("h1.", dA, 0), own("h2.", dA, 0)}}},
		{name: "move to another client, same name", changes: []Change{{Addr: a1, Name: "h.", DUID: dB, PrevName: "h.", PrevDUID: dA}},
			want: Pending{Addr: a1, Since: t0, Want: &Owner{Name: "h.", DUID: dB, TTL: 60}, Drop: []Owner{own("h.", dA, 0)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Pending
			for _, c := range tc.changes {
				p = merge(p, c, 60, t0)
			}
			if d := cmp.Diff(tc.want, p, cmpopts.EquateComparable(netip.Addr{})); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
}

func TestTTL(t *testing.T) {
	for _, tc := range []struct {
		fixed, valid time.Duration
		want         uint32
	}{
		{0, 30 * time.Minute, 600},
		{0, 5 * time.Second, 10},
		{0, 48 * time.Hour, 3600},
		{0, 0, 3600},
		{2 * time.Minute, 48 * time.Hour, 120},
	} {
		if got := ttlFor(tc.fixed, tc.valid); got != tc.want {
			t.Errorf("ttlFor(%v, %v) = %d, want %d", tc.fixed, tc.valid, got, tc.want)
		}
	}
}

func TestQualify(t *testing.T) {
	zones := []string{"example.net.", "lab.example.net.", "example.org."}
	for _, tc := range []struct{ in, fqdn, zone string }{
		{"h1", "h1.example.net.", "example.net."},
		{"H1.Example.NET", "h1.example.net.", "example.net."},
		{"h1.lab.example.net.", "h1.lab.example.net.", "lab.example.net."},
		{"h1.example.org", "h1.example.org.", "example.org."},
		{"h1.example.com.", "", ""},
		{"example.net.", "", ""}, // the apex
		{"bad_name.example.net", "", ""},
		{"-h.example.net", "", ""},
		{"", "", ""},
	} {
		fqdn, zone := qualify(zones, tc.in)
		if fqdn != tc.fqdn || zone != tc.zone {
			t.Errorf("qualify(%q) = %q, %q; want %q, %q", tc.in, fqdn, zone, tc.fqdn, tc.zone)
		}
	}
}

func TestDHCID(t *testing.T) {
	// RFC 4701 §3.6, example 1: DUID 000100013c8b..., the name
	// "chi6.example.com".
	duid := []byte{0x00, 0x01, 0x00, 0x06, 0x41, 0x2d, 0xf1, 0x66, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06}
	got := dhcid("chi6.example.com.", duid, 0).Digest
	if want := "AAIBY2/AuCccgoJbsaxcQc9TUapptP69lOjxfNuVAA2kjEA="; got != want {
		t.Errorf("DHCID = %s, want %s", got, want)
	}
}

// fakeDNS answers every update over an in-memory connection with the
// RCODE rcode returns, and counts the dials while down.
type fakeDNS struct {
	mu    sync.Mutex
	down  bool
	dials []time.Time
	msgs  []*dns.Msg
	clock scheduler.Clock
	wg    sync.WaitGroup
	// rcode answers m; nil: NOERROR.
	rcode func(m *dns.Msg) int
}

func (f *fakeDNS) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials = append(f.dials, f.clock.Now())
	if f.down {
		return nil, errors.New("connection refused (fake)")
	}
	c, s := net.Pipe()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer s.Close()
		sc := &dns.Conn{Conn: s}
		for {
			m, err := sc.ReadMsg()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.msgs = append(f.msgs, m)
			f.mu.Unlock()
			r := new(dns.Msg)
			rc := dns.RcodeSuccess
			if f.rcode != nil {
				rc = f.rcode(m)
			}
			r.SetRcode(m, rc)
			if err := sc.WriteMsg(r); err != nil {
				return
			}
		}
	}()
	return c, nil
}

func (f *fakeDNS) state() (dials int, msgs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.dials), len(f.msgs)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestBackoff: a server that does not answer is tried again after 1 s,
// 2 s, 4 s, 8 s, then every 8 s (the cap), on the fake clock; once it
// answers, the pending work is done and the journal emptied. The journal
// is given the outcomes: the first failure (once, however often it is
// retried), then the records added.
func TestBackoff(t *testing.T) {
	clock := scheduler.NewFakeClock(t0)
	f := &fakeDNS{down: true, clock: clock}
	j := &recJournal{FileJournal: NewFileJournal(filepath.Join(t.TempDir(), "j.json"))}
	u, err := New(Config{
		Server: "[2001:db8::53]:53", ForwardZones: []string{"example.net"}, ReverseZones: []string{"8.b.d.0.1.0.0.2.ip6.arpa"},
		Clock: clock, Logger: quiet(), Dial: f.dial, Journal: j,
		Retry: scheduler.Retry{First: time.Second, Max: 8 * time.Second},
		Rand:  func() float64 { return 0 }, // no jitter
	})
	if err != nil {
		t.Fatal(err)
	}
	defer runUpdater(t, u, f)()

	u.Enqueue(Change{Addr: a1, Name: "h1", DUID: dA, Valid: time.Hour})
	for _, wait := range []time.Duration{1, 2, 4, 8, 8, 8} {
		clock.BlockUntil(1) // the worker waits for its backoff
		n, _ := f.state()
		next, _ := clock.Next()
		if got := next.Sub(clock.Now()); got != wait*time.Second {
			t.Fatalf("after %d attempts: next in %v, want %v", n, got, wait*time.Second)
		}
		clock.Advance(wait * time.Second)
		waitFor(t, func() bool { m, _ := f.state(); return m == n+1 })
	}
	if u.Pending() != 1 {
		t.Fatalf("pending = %d, want 1", u.Pending())
	}
	if ps, _, err := j.Load(); err != nil || len(ps) != 1 || ps[0].Want.Name != "h1.example.net." {
		t.Fatalf("journal: %+v, %v; want h1's pending work", ps, err)
	}

	f.mu.Lock()
	f.down = false
	f.mu.Unlock()
	clock.BlockUntil(1)
	clock.Advance(8 * time.Second)
	waitFor(t, func() bool { return u.Pending() == 0 })
	_, msgs := f.state()
	if msgs != 2 { // AAAA+DHCID if the name is new, then the PTR
		t.Errorf("%d update messages, want 2", msgs)
	}
	if got := testutil.ToFloat64(u.m.updates.WithLabelValues("AAAA", "add", resultNoAnswer)); got != 7 {
		t.Errorf("no-answer AAAA adds = %v, want 7", got)
	}
	waitFor(t, func() bool { ps, _, _ := j.Load(); return len(ps) == 0 })
	var got []string
	for _, o := range j.outcomes() {
		got = append(got, o.Addr.String()+" "+o.Record+" "+o.Name+" "+o.Result)
		if o.Result == OutcomeFailed && o.Err == "" || string(o.DUID) != string(dA) {
			t.Errorf("outcome %+v", o)
		}
	}
	want := []string{"2001:db8:1::1 AAAA h1.example.net. failed", "2001:db8:1::1 AAAA h1.example.net. added", "2001:db8:1::1 PTR h1.example.net. added"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("outcomes (-want +got):\n%s", d)
	}
}

// recJournal is a FileJournal that keeps the outcomes it is given.
type recJournal struct {
	*FileJournal
	mu   sync.Mutex
	done []Outcome
}

func (j *recJournal) Apply(b Batch) error {
	j.mu.Lock()
	j.done = append(j.done, b.Done...)
	j.mu.Unlock()
	return j.FileJournal.Apply(b)
}

func (j *recJournal) outcomes() []Outcome {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]Outcome(nil), j.done...)
}

// TestEnqueueNeverBlocks: with no worker running, Enqueue returns at once
// and drops what exceeds MaxPending.
func TestEnqueueNeverBlocks(t *testing.T) {
	u, err := New(Config{Server: "[::1]:53", ForwardZones: []string{"example.net."}, MaxPending: 10, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range 1000 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i), 14: byte(i >> 8)})
		u.Enqueue(Change{Addr: a, Name: "h", DUID: dA})
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("1000 Enqueues took %v", d)
	}
	if u.Pending() != 10 || testutil.ToFloat64(u.m.dropped) != 990 {
		t.Errorf("pending %d, dropped %v; want 10, 990", u.Pending(), testutil.ToFloat64(u.m.dropped))
	}
	// Outside the zones, or a refresh: nothing queued.
	u2, _ := New(Config{Server: "[::1]:53", ForwardZones: []string{"example.net."}, Logger: quiet()})
	u2.Enqueue(Change{Addr: a1, Name: "h.example.com", DUID: dA})
	u2.Enqueue(Change{Addr: a1, Name: "h", DUID: dA, PrevName: "h.example.net.", PrevDUID: dA})
	if u2.Pending() != 0 {
		t.Errorf("pending %d, want 0", u2.Pending())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRefusedWaitsAlone: an update the server refuses (a zone it does
// not serve) backs off alone; the others go on.
func TestRefusedWaitsAlone(t *testing.T) {
	clock := scheduler.NewFakeClock(t0)
	f := &fakeDNS{clock: clock, rcode: func(m *dns.Msg) int {
		if m.Question[0].Name == "example.org." {
			return dns.RcodeRefused
		}
		return dns.RcodeSuccess
	}}
	u, err := New(Config{
		Server: "[2001:db8::53]:53", ForwardZones: []string{"example.net", "example.org"},
		Clock: clock, Logger: quiet(), Dial: f.dial, Rand: func() float64 { return 0 },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		f.wg.Wait()
	}()
	u.Enqueue(Change{Addr: a1, Name: "h.example.org", DUID: dA})
	for i := range 5 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 10)})
		u.Enqueue(Change{Addr: a, Name: "h.example.net", DUID: dA})
	}
	waitFor(t, func() bool { return u.Pending() == 1 })
	clock.BlockUntil(1)
	if next, _ := clock.Next(); next.Sub(clock.Now()) != time.Second {
		t.Errorf("refused update retried in %v, want 1s", next.Sub(clock.Now()))
	}
	if got := testutil.ToFloat64(u.m.updates.WithLabelValues("AAAA", "add", "REFUSED")); got != 1 {
		t.Errorf("REFUSED AAAA adds = %v, want 1", got)
	}
}

// TestBadJournal: an unreadable journal is reported, and updates go on.
func TestBadJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock := scheduler.NewFakeClock(t0)
	f := &fakeDNS{clock: clock}
	u, err := New(Config{Server: "[::1]:53", ForwardZones: []string{"example.net"}, Clock: clock, Logger: quiet(),
		Dial: f.dial, Journal: NewFileJournal(path)})
	if err != nil {
		t.Fatal(err)
	}
	stop := runUpdater(t, u, f)
	u.Enqueue(Change{Addr: a1, Name: "h", DUID: dA})
	waitFor(t, func() bool { return u.Pending() == 0 })
	stop()
	if got := testutil.ToFloat64(u.m.journal); got != 1 {
		t.Errorf("journal errors = %v, want 1", got)
	}
	if ps, _, err := NewFileJournal(path).Load(); err != nil || len(ps) != 0 {
		t.Errorf("journal after the work: %v, %v; want a valid empty one", ps, err)
	}
}

// BenchmarkEnqueue is what a committed binding change costs the server's
// writer goroutine.
func BenchmarkEnqueue(b *testing.B) {
	u, err := New(Config{Server: "[::1]:53", ForwardZones: []string{"example.net."}, MaxPending: 1 << 30, Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	c := Change{Addr: a1, Name: "host-name", DUID: dA, Valid: time.Hour}
	for b.Loop() {
		u.Enqueue(c)
	}
}

// changesJournal is a journal holding changes a server committed before a
// crash; it records the Batches it is given.
type changesJournal struct {
	changes []Change
	mu      sync.Mutex
	batches []Batch
}

func (j *changesJournal) Load() ([]Pending, []Change, error) { return nil, j.changes, nil }

func (j *changesJournal) Apply(b Batch) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	b.Taken = append([]int64(nil), b.Taken...)
	j.batches = append(j.batches, b)
	return nil
}

func (j *changesJournal) taken() []int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []int64
	for _, b := range j.batches {
		out = append(out, b.Taken...)
	}
	return out
}

// TestJournalChanges: the changes a journal returns are done like
// enqueued ones, and every Seq, of a change merged or ignored (a name
// outside the zones, a refresh), from the journal or Enqueue, is taken.
func TestJournalChanges(t *testing.T) {
	clock := scheduler.NewFakeClock(t0)
	f := &fakeDNS{clock: clock}
	j := &changesJournal{changes: []Change{
		{Addr: a1, Name: "h1", DUID: dA, Valid: time.Hour, Seq: 1},
		{Addr: a1, Name: "h2", DUID: dA, PrevName: "h1", PrevDUID: dA, Valid: time.Hour, Seq: 2}, // a rename: merged
		{Addr: netip.MustParseAddr("2001:db8:1::2"), Name: "x.example.com", DUID: dA, Seq: 3},    // outside the zones
	}}
	u, err := New(Config{Server: "[2001:db8::53]:53", ForwardZones: []string{"example.net"}, Clock: clock, Logger: quiet(), Dial: f.dial, Journal: j})
	if err != nil {
		t.Fatal(err)
	}
	defer runUpdater(t, u, f)()
	u.Enqueue(Change{Addr: a1, Name: "h1", DUID: dA, PrevName: "h1", PrevDUID: dA, Seq: 4}) // a refresh
	waitFor(t, func() bool { return len(j.taken()) == 4 && u.Pending() == 0 })
	got := j.taken()
	slices.Sort(got)
	if !slices.Equal(got, []int64{1, 2, 3, 4}) {
		t.Errorf("taken %v, want 1 2 3 4", got)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for _, m := range f.msgs {
		for _, rr := range m.Ns {
			names = append(names, rr.Header().Name)
		}
	}
	if !slices.Contains(names, "h2.example.net.") || slices.Contains(names, "x.example.com.") {
		t.Errorf("updates to %v; want h2.example.net., nothing outside the zones", names)
	}
}

// runUpdater runs u; the stop it returns ends Run, reports Run's error and
// waits for f's exchanges.
func runUpdater(t *testing.T, u *Updater, f *fakeDNS) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		f.wg.Wait()
	}
}
