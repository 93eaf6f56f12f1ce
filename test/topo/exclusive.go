package topo

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The machine-wide hold. Tests share one kernel (STYLE.md point 14): its
// neighbour table (net.ipv6.neigh.default.gc_thresh3 counts every
// namespace), conntrack, port ranges. A test that must fill one of those on
// purpose calls Exclusive first; every topology (New) holds the machine
// shared for its test's duration, so no other topology, in this binary or
// in another test binary (go test runs packages in parallel), exists while
// an exclusive test runs.
//
// Across processes it is two flock(2) files: a turnstile and the lock.
// A shared hold passes the turnstile (takes and drops it) and takes the
// lock shared; an exclusive hold takes the turnstile, then the lock
// exclusive, and keeps both. A waiting exclusive holder therefore stops new
// shared holders at the turnstile (writer preference): it waits only for
// the tests already running, never starves. A killed test binary releases
// its locks with its files. Within one process the holds are counted
// (flock locks belong to the open file, so a second file would conflict
// with the first): the process holds the lock shared while any of its tests
// does, and an exclusive test in it waits for its other tests to end.
var (
	// LockDir holds the lock files. Every test binary on the machine
	// must agree on it; a chroot or container with its own /run is
	// another machine as far as this lock goes.
	LockDir = "/run"

	holds = &machineHold{}
)

const (
	turnstileFile = "addrreg-test.turnstile"
	lockFile      = "addrreg-test.lock"
	// exclusiveWait bounds an exclusive test's wait for the other tests
	// of its own binary: longer means a test that holds a topology while
	// it is paused (topo.New before t.Parallel) blocks it for good.
	exclusiveWait = 10 * time.Minute
)

type machineHold struct {
	mu     sync.Mutex
	cond   *sync.Cond
	shared map[string]int // test name → shared holds it has (New calls)
	n      int            // sum of shared
	excl   string         // the test holding the machine exclusive
	// waiting counts exclusive tests waiting in this process: shared
	// holds of other tests wait behind them (writer preference here too).
	waiting int
	busy    bool // a flock call is under way (mu released meanwhile)
	// flockShared: this process holds the lock file shared.
	flockShared     bool
	lockF, turnstil *os.File
	dir             string // LockDir when empty
}

// within reports whether test name is test outer or one of its subtests.
func within(name, outer string) bool {
	return name == outer || strings.HasPrefix(name, outer+"/")
}

// heldBy is the first shared holder that is name or one of its parents.
func (h *machineHold) heldBy(name string) string {
	for holder, k := range h.shared {
		if k > 0 && within(name, holder) {
			return holder
		}
	}
	return ""
}

func (h *machineHold) init() {
	if h.cond == nil {
		h.cond = sync.NewCond(&h.mu)
		h.shared = map[string]int{}
	}
}

// open opens the two lock files once per process (close-on-exec, so the
// daemons a test starts do not inherit the locks).
func (h *machineHold) open() error {
	if h.lockF != nil {
		return nil
	}
	dir := h.dir
	if dir == "" {
		dir = LockDir
	}
	t, err := os.OpenFile(filepath.Join(dir, turnstileFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("machine-wide test lock: %w", err)
	}
	l, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Close()
		return fmt.Errorf("machine-wide test lock: %w", err)
	}
	h.turnstil, h.lockF = t, l
	return nil
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			if err != nil {
				return fmt.Errorf("flock %s: %w", f.Name(), err)
			}
			return nil
		}
	}
}

// acquireShared takes a shared hold for test name and returns its release.
func (h *machineHold) acquireShared(name string) (func(), error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.init()
	if h.excl != "" && within(name, h.excl) {
		return func() {}, nil // inside the exclusive test: covered by it
	}
	if h.heldBy(name) == "" {
		// Not nested in a holder (a nested one must not wait: its
		// parent's hold would keep the exclusive waiter from ever
		// getting in).
		for h.excl != "" || h.waiting > 0 || h.busy {
			h.cond.Wait()
		}
		if !h.flockShared {
			if err := h.open(); err != nil {
				return nil, err
			}
			h.busy = true
			h.mu.Unlock()
			err := flock(h.turnstil, syscall.LOCK_EX)
			if err == nil {
				err = flock(h.lockF, syscall.LOCK_SH)
				_ = flock(h.turnstil, syscall.LOCK_UN)
			}
			h.mu.Lock()
			h.busy = false
			h.cond.Broadcast()
			if err != nil {
				return nil, err
			}
			h.flockShared = true
		}
	}
	h.shared[name]++
	h.n++
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.shared[name]--
		if h.shared[name] == 0 {
			delete(h.shared, name)
		}
		h.n--
		if h.n == 0 && h.flockShared {
			_ = flock(h.lockF, syscall.LOCK_UN)
			h.flockShared = false
		}
		h.cond.Broadcast()
	}, nil
}

// acquireExclusive takes the machine exclusive for test name. It fails
// at once if the test (or a test it is a subtest of) holds a topology:
// waiting would wait for itself.
func (h *machineHold) acquireExclusive(name string, logf func(string, ...any)) (func(), error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.init()
	if h.excl != "" && within(name, h.excl) {
		return func() {}, nil
	}
	if holder := h.heldBy(name); holder != "" {
		return nil, fmt.Errorf("%s holds a topology (topo.New) already: call topo.Exclusive before building any", holder)
	}
	if err := h.open(); err != nil {
		return nil, err
	}
	h.waiting++
	deadline := time.Now().Add(exclusiveWait)
	wake := time.AfterFunc(time.Minute, func() { h.cond.Broadcast() })
	logged := false
	for h.excl != "" || h.n > 0 || h.busy {
		if !logged {
			logf("topo.Exclusive: waiting for this binary's other tests (%s) to end", h.holders())
			logged = true
		}
		if time.Now().After(deadline) {
			h.waiting--
			wake.Stop()
			h.cond.Broadcast()
			return nil, fmt.Errorf("waited %v for this binary's other tests to end; still held by %s (a test paused in t.Parallel after topo.New?)", exclusiveWait, h.holders())
		}
		h.cond.Wait()
		wake.Reset(time.Minute)
	}
	wake.Stop()
	h.waiting--
	h.excl = name
	h.busy = true
	h.mu.Unlock()
	start := time.Now()
	err := flock(h.turnstil, syscall.LOCK_EX)
	if err == nil {
		if err = flock(h.lockF, syscall.LOCK_EX); err != nil {
			_ = flock(h.turnstil, syscall.LOCK_UN)
		}
	}
	h.mu.Lock()
	h.busy = false
	if err != nil {
		h.excl = ""
		h.cond.Broadcast()
		return nil, err
	}
	if d := time.Since(start); d > time.Second {
		logf("topo.Exclusive: waited %v for the tests of other binaries to end", d.Round(time.Millisecond))
	}
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		_ = flock(h.lockF, syscall.LOCK_UN)
		_ = flock(h.turnstil, syscall.LOCK_UN)
		h.excl = ""
		h.cond.Broadcast()
	}, nil
}

func (h *machineHold) holders() string {
	names := make([]string, 0, len(h.shared))
	for n := range h.shared {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// Exclusive gives the calling test the machine to itself until it ends:
// it waits until no topology exists in any test binary on the machine,
// and keeps new ones (New, in any binary) waiting until its cleanup. A
// test that fills a table every namespace shares (the neighbour table,
// conntrack…) or floods calls it first, before New; calling it after New
// in the same test, or in a subtest of a test that holds a topology, fails
// the test (it would wait for itself). Subtests of an exclusive test and
// their topologies are covered by it. It needs root (RequireRoot).
func Exclusive(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	release, err := holds.acquireExclusive(t.Name(), t.Logf)
	if err != nil {
		t.Fatalf("topo.Exclusive: %v", err)
	}
	t.Cleanup(release)
}

// holdShared is New's part: the test holds the machine shared until its
// cleanup, so an exclusive test elsewhere waits for it.
func holdShared(t testing.TB) {
	t.Helper()
	release, err := holds.acquireShared(t.Name())
	if err != nil {
		t.Fatalf("topo: %v", err)
	}
	t.Cleanup(release)
}
