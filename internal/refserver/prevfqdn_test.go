package refserver

import (
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
		}{
			{duidA, "h1", time.Hour, EventRegister, "h1", ""},
			{duidA, "h1", time.Hour, EventRefresh, "h1", "h1"},
			{duidA, "h2", time.Hour, EventRefresh, "h2", "h1"},
			{duidB, "h3", time.Hour, EventMove, "h3", "h2"},
			{duidB, "", time.Hour, EventRefresh, "", "h3"},
			{duidB, "h4", time.Hour, EventRefresh, "h4", ""},
			{duidB, "", 0, EventDeregister, "h4", ""}, // the binding removed, with its name
		} {
			at = at.Add(time.Minute)
			ev := regEvent(tc.duid, a, at, tc.valid)
			ev.Binding.FQDN = tc.name
			got := mustCommit(t, st, ev)[0]
			if got.Kind != tc.kind || got.Binding.FQDN != tc.fqdn || got.PrevFQDN != tc.prev {
				t.Errorf("%x %q: %v fqdn %q prev %q; want %v %q %q", tc.duid, tc.name, got.Kind, got.Binding.FQDN, got.PrevFQDN, tc.kind, tc.fqdn, tc.prev)
			}
		}
	})
}
