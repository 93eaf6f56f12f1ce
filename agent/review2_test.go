package agent

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/addrreg/addrreg/netmon"
)

// Defects found by the property test (property_test.go), each pinned by
// the smallest sequence that shows it.

func inSnapshot(h *harness, ip string) bool {
	return slices.ContainsFunc(h.m.snapshot(), func(sa savedAddr) bool { return sa.Addr == netip.MustParseAddr(ip) })
}

// A deregistration that the stop could not get out (its one send refused,
// or still in flight when StopTimeout ran out) stays in the last state
// file: the server still holds the binding, and the next start must
// deregister it. It was dropped: the stop took the address off the owed
// set when it started the deregistration, whatever became of it.
func TestStopKeepsUnsentDeregistrationInStateFile(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		h := startOnLink(t, defaults(), true)
		a := global("2001:db8::1", netmon.Infinite)
		a.Class = netmon.ClassStatic
		h.mon.add(a)
		h.settle()
		h.reg.mu.Lock()
		h.reg.refuse = true
		h.reg.mu.Unlock()
		h.mon.remove(a) // refused, owed again after Retry.First
		h.settle()
		if !inSnapshot(h, "2001:db8::1") {
			t.Fatal("the owed deregistration is not in the snapshot before the stop")
		}
		h.shutdown() // refused again
		if !inSnapshot(h, "2001:db8::1") {
			t.Fatal("after a stop whose deregistration was refused, the state file forgot the address the server holds")
		}
	})
	t.Run("abandoned", func(t *testing.T) {
		h := startOnLink(t, defaults(), true)
		a := global("2001:db8::1", time.Hour)
		h.mon.add(a)
		h.settle()
		h.reg.holdDereg = true
		h.mon.remove(a) // its deregistration hangs
		h.shutdown()    // abandoned
		if !inSnapshot(h, "2001:db8::1") {
			t.Fatal("after a stop that abandoned a deregistration, the state file forgot the address the server holds")
		}
	})
}
