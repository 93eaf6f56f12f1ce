package netmon

import "testing"

// String is safe for any value.
func TestNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{ClassOther.String(), "other"},
		{Class(-1).String(), "class(-1)"},
		{Class(99).String(), "class(99)"},
		{StateDADFailed.String(), "dad-failed"},
		{State(-1).String(), "state(-1)"},
		{State(99).String(), "state(99)"},
		{ClockJump.String(), "clock-jump"},
		{EventKind(-1).String(), "event(-1)"},
		{EventKind(99).String(), "event(99)"},
		{Event{Kind: EventKind(99)}.String(), "event(99) (0) up false lower false M false O false ra false"},
	} {
		if tc.got != tc.want {
			t.Errorf("String() = %q, want %q", tc.got, tc.want)
		}
	}
}
