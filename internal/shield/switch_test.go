package shield

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := newLimiter(3, 2)
	t0 := time.Unix(1000, 0)
	got := 0
	for range 10 {
		if l.allow(t0) {
			got++
		}
	}
	if got != 3 {
		t.Errorf("burst allowed %d lines, want 3", got)
	}
	if n := l.takeSuppressed(); n != 7 {
		t.Errorf("suppressed %d, want 7", n)
	}
	if !l.allow(t0.Add(500*time.Millisecond)) || l.allow(t0.Add(500*time.Millisecond)) {
		t.Errorf("after 0.5 s at 2 lines/s, want exactly one line")
	}
}

func TestMACTable(t *testing.T) {
	mt := macTable{m: map[[6]byte]macEntry{}, age: time.Minute}
	a := [6]byte{2, 0, 0, 0, 0, 1}
	t0 := time.Unix(1000, 0)
	if _, ok := mt.lookup(a, t0); ok {
		t.Fatal("lookup in empty table found a port")
	}
	mt.learn(a, 1, t0)
	if p, ok := mt.lookup(a, t0.Add(time.Second)); !ok || p != 1 {
		t.Errorf("lookup = %d, %v; want 1, true", p, ok)
	}
	mt.learn(a, 2, t0.Add(2*time.Second)) // station moved
	if p, _ := mt.lookup(a, t0.Add(3*time.Second)); p != 2 {
		t.Errorf("after move lookup = %d, want 2", p)
	}
	if _, ok := mt.lookup(a, t0.Add(2*time.Minute)); ok {
		t.Error("aged entry still found")
	}
}
