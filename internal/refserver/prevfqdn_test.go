package refserver

import (
	"context"
	"testing"
	"time"
)

// TestPrevFQDN: a refresh or move says which name the binding had, so
// that DNS updates (internal/ddns) can follow a rename. The commit decides
// it from the database (another server may have registered the name), on
// both backends.
func TestPrevFQDN(t *testing.T) {
	forBackends(t, func(t *testing.T, db string) {
		st := openTest(t, db, retention{})
		a := "2001:db8::7"
		at := st0
		for _, tc := range []struct {
			duid       []byte
			name       string
			valid      time.Duration
			kind       EventKind
			fqdn, prev string
			soon       bool // within a second of the last: not taken for the same INFORM from another server
		}{
			{duidA, "h1", time.Hour, EventRegister, "h1", "", false},
			{duidA, "h1", time.Hour, EventRefresh, "h1", "h1", false},
			{duidA, "h2", time.Hour, EventRefresh, "h2", "h1", false},
			{duidA, "h2b", time.Hour, EventRefresh, "h2b", "h2", true}, // a rename, re-registered at once
			{duidA, "h2", time.Hour, EventRefresh, "h2", "h2b", true},
			{duidB, "h3", time.Hour, EventMove, "h3", "h2", false},
			{duidB, "", time.Hour, EventRefresh, "", "h3", false},
			{duidB, "h4", time.Hour, EventRefresh, "h4", "", false},
			{duidB, "", 0, EventDeregister, "h4", "", false}, // the binding removed, with its name
		} {
			if tc.soon {
				at = at.Add(100 * time.Millisecond)
			} else {
				at = at.Add(time.Minute)
			}
			ev := regEvent(tc.duid, a, at, tc.valid)
			ev.Binding.FQDN = tc.name
			got := mustCommit(t, st, ev)[0]
			if stored, _, _ := st.byAddr(context.Background(), ev.Binding.Addr); tc.valid != 0 && stored.FQDN != tc.fqdn {
				t.Errorf("%x %q: the database holds fqdn %q", tc.duid, tc.name, stored.FQDN)
			}
			if got.Kind != tc.kind || got.Binding.FQDN != tc.fqdn || got.PrevFQDN != tc.prev {
				t.Errorf("%x %q: %v fqdn %q prev %q; want %v %q %q", tc.duid, tc.name, got.Kind, got.Binding.FQDN, got.PrevFQDN, tc.kind, tc.fqdn, tc.prev)
			}
		}
	})
}
