package proctest

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       time.Duration
		wantErr    bool
	}{
		{"plain", "42 (addrregd) S 1 42 42 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 8 0 1000 0 0", 1750 * time.Millisecond, false},
		{"name with spaces and parentheses", "42 (a (b) c) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0", 100 * time.Millisecond, false},
		{"truncated", "42 (x) S 1 2 3", 0, true},
		{"no name", "42 x S", 0, true},
		{"not numbers", "42 (x) S 1 42 42 0 -1 0 0 0 0 0 u s 0 0", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat("stat", []byte(tc.stat))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("parseStat(%q) = %v, %v; want %v, error %t", tc.stat, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// The test's own process's CPU time grows while it spins (in ticks of
// 10 ms: spin until it does, for at most 5 s of wall time on a busy machine).
func TestCPUSelf(t *testing.T) {
	d0 := CPU(t, os.Getpid())
	d1 := d0
	for deadline := time.Now().Add(5 * time.Second); d1 <= d0 && time.Now().Before(deadline); {
		d1 = CPU(t, os.Getpid())
	}
	if d1 <= d0 {
		t.Errorf("CPU time still %v after spinning 5 s", d1)
	}
	if _, err := ReadCPU(-1); err == nil {
		t.Error("ReadCPU(-1) succeeded")
	}
}
