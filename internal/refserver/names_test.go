package refserver

import "testing"

// String is safe for any value.
func TestEventKindString(t *testing.T) {
	for k, want := range map[EventKind]string{EventRegister: "register", EventLeasequery: "leasequery", -1: "event(-1)", 99: "event(99)"} {
		if got := k.String(); got != want {
			t.Errorf("EventKind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}
