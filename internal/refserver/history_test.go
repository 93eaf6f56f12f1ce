package refserver

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/addrreg/addrreg/internal/ctlsock"
)

func TestHolderAt(t *testing.T) {
	a := netip.MustParseAddr("2001:db8:1::99")
	other := netip.MustParseAddr("2001:db8:1::98")
	t0 := time.Date(2026, 12, 1, 14, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	duidA, duidB := []byte{0, 4, 0xa}, []byte{0, 4, 0xb}
	rec := func(m int, ev string, duid []byte, valid time.Duration) HistoryRecord {
		return HistoryRecord{Time: at(m), Event: ev, DUID: duid, Addr: a, Valid: valid}
	}
	recs := []HistoryRecord{
		rec(0, "register", duidA, time.Hour),
		{Time: at(1), Event: "register", DUID: duidB, Addr: other, Valid: time.Hour},
		rec(2, "refresh", duidA, time.Hour),
		rec(3, "reject", duidB, 0),
		rec(5, "move", duidB, 10*time.Minute),
		rec(8, "deregister", duidB, 0),
		rec(20, "register", duidA, 5*time.Minute),
	}
	for _, tc := range []struct {
		name       string
		m          int
		wantDUID   []byte
		wantSince  time.Time
		wantUntil  time.Time
		wantUntilE string
	}{
		{"before anything", -1, nil, time.Time{}, time.Time{}, ""},
		{"first holder, refreshed", 3, duidA, at(0), at(5), "move"},
		{"after the move", 6, duidB, at(5), at(8), "deregister"},
		{"deregistered", 10, nil, time.Time{}, time.Time{}, ""},
		{"registered again", 21, duidA, at(20), time.Time{}, ""},
		{"lifetime ran out without an expire record", 30, nil, time.Time{}, time.Time{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, ok := HolderAt(recs, a, at(tc.m))
			if ok != (tc.wantDUID != nil) {
				t.Fatalf("held = %v, want %v (%+v)", ok, tc.wantDUID != nil, h)
			}
			if !ok {
				return
			}
			got := []any{h.DUID, h.Since, h.Until, h.UntilEvent}
			want := []any{tc.wantDUID, tc.wantSince, tc.wantUntil, tc.wantUntilE}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("holding (-want +got):\n%s", diff)
			}
		})
	}
}

// The history keeps at most HistoryMax records and none older than
// HistoryMaxAge; a query over the control socket answers from it.
func TestHistoryRetentionAndControl(t *testing.T) { forBackends(t, testHistoryRetentionAndControl) }

func testHistoryRetentionAndControl(t *testing.T, db string) {
	st := openTest(t, db, retention{max: 5, maxAge: time.Hour})
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	ev := func(i int, at time.Time) Event {
		return Event{Kind: EventRegister, Time: at, Binding: Binding{
			DUID: []byte{0, 4, byte(i)}, Addr: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}), Valid: time.Hour}}
	}
	for i := range 8 {
		mustCommit(t, st, ev(i, t0.Add(time.Duration(i)*time.Minute)))
	}
	all := mustHistory(t, st, HistoryQuery{})
	if len(all) != 5 || all[0].DUID[2] != 3 {
		t.Fatalf("after 8 records with max 5: %d records, first of client %v", len(all), all[0].DUID)
	}
	// Two hours later: everything before now-1h goes.
	mustCommit(t, st, ev(9, t0.Add(2*time.Hour)))
	if all = mustHistory(t, st, HistoryQuery{}); len(all) != 1 {
		t.Fatalf("after the age limit: %d records, want 1: %+v", len(all), all)
	}

	s := &Server{}
	s.st.Store(&storageRef{st})
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := ctlsock.Listen(sock, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeControl(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
	defer qcancel()
	got, err := QueryControl(qctx, sock, HistoryQuery{ClientID: []byte{0, 4, 9}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Addr != ev(9, t0).Binding.Addr {
		t.Errorf("query by client ID: %+v", got)
	}
	if got, err = QueryControl(qctx, sock, HistoryQuery{ClientID: []byte{1}}); err != nil || len(got) != 0 {
		t.Errorf("query for an unknown client: %v, %v", got, err)
	}
}

// BenchmarkHistoryQuery is one `history --address A` over a full history
// (DefaultHistoryMax records): the length of the read transaction, which
// runs beside the writer.
func BenchmarkHistoryQuery(b *testing.B) {
	st := openTest(b, filepath.Join(b.TempDir(), "db"), retention{})
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const n, batch = DefaultHistoryMax, 5000
	for i := 0; i < n; i += batch {
		evs := make([]Event, batch)
		for j := range evs {
			k := i + j
			evs[j] = Event{Kind: EventRefresh, Time: t0.Add(time.Duration(k) * time.Second), Binding: Binding{
				DUID: []byte{0, 4, byte(k >> 8), byte(k)}, Iface: "eth0", Valid: time.Hour,
				Addr: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 13: byte(k >> 16), 14: byte(k >> 8), 15: byte(k)})}}
		}
		mustCommit(b, st, evs...)
	}
	q := HistoryQuery{Address: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: 1, 15: 2})}
	b.ResetTimer()
	for b.Loop() {
		rs, err := st.history(context.Background(), q)
		if err != nil || len(rs) != 1 {
			b.Fatal(len(rs), err)
		}
	}
}

// FuzzControlRequest: whatever a client writes on the control socket, the
// server answers one JSON reply and never panics.
func FuzzControlRequest(f *testing.F) {
	for _, seed := range []string{
		`{"op":"history","history":{"address":"2001:db8::1"}}`,
		`{"op":"history","history":{"client_id":"000401","since":"2026-12-01T00:00:00Z"}}`,
		`{"op":"history","history":{"client_id":"zz"}}`,
		`{"op":"nope"}`, `not json`, ``, `{"op":"history","history":{"address":"10.0.0.1","until":"x"}}`,
	} {
		f.Add([]byte(seed))
	}
	st := openTest(f, filepath.Join(f.TempDir(), "db"), retention{})
	ev := Event{Kind: EventRegister, Time: time.Now(), Binding: Binding{DUID: []byte{0, 4, 1}, Addr: netip.MustParseAddr("2001:db8::1"), Valid: time.Hour}}
	mustCommit(f, st, ev)
	s := &Server{log: slog.New(slog.DiscardHandler)}
	s.st.Store(&storageRef{st})
	f.Fuzz(func(t *testing.T, req []byte) {
		c1, c2 := net.Pipe()
		done := make(chan struct{})
		go func() { defer close(done); s.answerControl(c1) }()
		line := append(bytes.ReplaceAll(req, []byte("\n"), nil), '\n')
		go func() { _, _ = c2.Write(line) }()
		var rep controlReply
		err := json.NewDecoder(c2).Decode(&rep)
		c2.Close()
		<-done
		if err != nil {
			t.Fatalf("request %q: reply is not JSON: %v", req, err)
		}
	})
}
