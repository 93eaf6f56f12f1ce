package shield

import "testing"

// String is safe for any value.
func TestNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Drop.String(), "drop"},
		{Pass.String(), "pass"},
		{Action(7).String(), "action(7)"},
		{ReasonTruncated.String(), "truncated"},
		{Reason(NumReasons).String(), "reason(8)"},
		{Reason(255).String(), "reason(255)"},
	} {
		if tc.got != tc.want {
			t.Errorf("String() = %q, want %q", tc.got, tc.want)
		}
	}
}
