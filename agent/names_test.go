package agent

import "testing"

// String is safe for any value: a state read from a corrupt file or a
// future version must not panic a log line.
func TestStateNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{IfUnknown.String(), "unknown"},
		{IfUnsupported.String(), "unsupported"},
		{IfState(-1).String(), "ifstate(-1)"},
		{IfState(99).String(), "ifstate(99)"},
		{Pending.String(), "pending"},
		{Deregistering.String(), "deregistering"},
		{Phase(-1).String(), "phase(-1)"},
		{Phase(99).String(), "phase(99)"},
	} {
		if tc.got != tc.want {
			t.Errorf("String() = %q, want %q", tc.got, tc.want)
		}
	}
}
