package shield

import (
	"testing"
	"time"
)

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
