package topo

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newHold(t *testing.T) *machineHold {
	h := &machineHold{dir: t.TempDir()}
	t.Cleanup(func() {
		if h.lockF != nil {
			h.lockF.Close()
			h.turnstil.Close()
		}
	})
	return h
}

// acquired runs acquire in a goroutine and reports its release on the
// returned channel once it holds.
func acquired(t *testing.T, acquire func() (func(), error)) <-chan func() {
	ch := make(chan func(), 1)
	go func() {
		rel, err := acquire()
		if err != nil {
			t.Errorf("acquire: %v", err)
			close(ch)
			return
		}
		ch <- rel
	}()
	return ch
}

func mustNotYet(t *testing.T, ch <-chan func(), what string) {
	t.Helper()
	select {
	case <-ch:
		t.Fatalf("%s got the lock", what)
	case <-time.After(200 * time.Millisecond):
	}
}

func mustGet(t *testing.T, ch <-chan func(), what string) func() {
	t.Helper()
	select {
	case rel, ok := <-ch:
		if !ok {
			t.Fatalf("%s failed", what)
		}
		return rel
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not get the lock within 5 s", what)
		return nil
	}
}

// Within one binary: an exclusive test waits for the shared holders, new
// shared holders wait behind it (not nested ones), and a test that holds a
// topology cannot ask for the machine exclusive (it would wait for itself).
func TestExclusiveInProcess(t *testing.T) {
	h := newHold(t)
	relA, err := h.acquireShared("TestA")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.acquireExclusive("TestA", t.Logf); err == nil || !strings.Contains(err.Error(), "before") {
		t.Fatalf("exclusive after shared in the same test: %v, want an error", err)
	}
	if _, err := h.acquireExclusive("TestA/sub", t.Logf); err == nil {
		t.Fatal("exclusive in a subtest of a holder: no error")
	}
	ex := acquired(t, func() (func(), error) { return h.acquireExclusive("TestX", t.Logf) })
	mustNotYet(t, ex, "exclusive beside a shared holder")
	// Writer preference: a new shared holder waits behind the exclusive
	// one; a subtest of the holder does not (its parent would never end).
	sh := acquired(t, func() (func(), error) { return h.acquireShared("TestB") })
	mustNotYet(t, sh, "shared behind a waiting exclusive")
	relSub, err := h.acquireShared("TestA/sub")
	if err != nil {
		t.Fatal(err)
	}
	relSub()
	relA()
	relX := mustGet(t, ex, "exclusive after the holder ended")
	mustNotYet(t, sh, "shared while exclusive is held")
	// The exclusive test's own subtests build topologies freely.
	relIn, err := h.acquireShared("TestX/sub")
	if err != nil {
		t.Fatal(err)
	}
	relIn()
	relX()
	mustGet(t, sh, "shared after the exclusive ended")()
}

// Across binaries: an exclusive holder waits for another process's shared
// lock, and holds the turnstile meanwhile so that a newcomer's shared hold
// waits too.
func TestExclusiveAcrossProcesses(t *testing.T) {
	flockCmd, err := exec.LookPath("flock")
	if err != nil {
		t.Skip("no flock(1)")
	}
	h := newHold(t)
	// Another binary's topology: the lock file held shared.
	other := exec.Command(flockCmd, "-o", "-s", filepath.Join(h.dir, lockFile), "sleep", "60") // -o: sleep does not inherit the lock
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if exec.Command(flockCmd, "-n", "-x", filepath.Join(h.dir, lockFile), "true").Run() != nil {
			break // the other process holds it
		}
		if time.Now().After(deadline) {
			t.Fatal("flock(1) did not take the lock")
		}
	}
	ex := acquired(t, func() (func(), error) { return h.acquireExclusive("TestX", t.Logf) })
	mustNotYet(t, ex, "exclusive beside another process's shared hold")
	// A newcomer process stops at the turnstile.
	if exec.Command(flockCmd, "-n", "-x", filepath.Join(h.dir, turnstileFile), "true").Run() == nil {
		t.Fatal("the turnstile is free while an exclusive holder waits")
	}
	_ = other.Process.Kill()
	_ = other.Wait()
	rel := mustGet(t, ex, "exclusive after the other process ended")
	if exec.Command(flockCmd, "-n", "-s", filepath.Join(h.dir, lockFile), "true").Run() == nil {
		t.Fatal("another process takes the lock shared while it is held exclusive")
	}
	rel()
	if err := exec.Command(flockCmd, "-n", "-s", filepath.Join(h.dir, lockFile), "true").Run(); err != nil {
		t.Fatalf("lock not released: %v", err)
	}
}
