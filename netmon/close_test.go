package netmon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/test/topo"
)

// socketsIn lists this process's open sockets that belong to the network
// namespace with inode nsIno (SIOCGSKNS): each keeps that namespace alive
// after `ip netns del`.
func socketsIn(t *testing.T, nsIno uint64) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || len(target) < 7 || target[:7] != "socket:" {
			continue
		}
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err != nil {
			continue
		}
		nsfd, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
		if err != nil {
			continue // closed meanwhile, or not a network socket
		}
		var st unix.Stat_t
		err = unix.Fstat(nsfd, &st)
		unix.Close(nsfd)
		if err == nil && st.Ino == nsIno {
			out = append(out, fmt.Sprintf("fd %d %s", fd, target))
		}
	}
	return out
}

// stopRun cancels a Run and waits for it to return nil.
func stopRun(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s")
	}
}

func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Lookup keeps request sockets for reuse, and each pins the namespace it
// was opened in. Run's end closes them, Close does so for good: afterwards
// no socket of the namespace is open and no descriptor has leaked. Not
// parallel: it counts the process's descriptors.
func TestNetnsCloseReleasesSockets(t *testing.T) {
	topo.RequireRoot(t)
	n := topo.New(t)
	h := n.Node("host")
	ns, err := h.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(ns), &st); err != nil {
		t.Fatal(err)
	}
	nsIno := st.Ino
	before := fdCount(t)

	m := New(Options{Netns: ns, Logger: testLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	// Concurrent lookups, as the registrar makes them: the pool fills.
	lookups := func() {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 20 {
					if _, ok, err := m.Lookup(1, netip.MustParseAddr("::1")); !ok || err != nil {
						t.Errorf("Lookup(::1 on lo) = %t, %v", ok, err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	lookups()
	// The check can fail: while running, the pool holds the namespace.
	if got := socketsIn(t, nsIno); len(got) == 0 || len(got) > maxIdle+2 {
		t.Errorf("while running: %d sockets in the namespace, want 1 to %d (pool + subscription): %q", len(got), maxIdle+2, got)
	}
	stopRun(t, cancel, done)
	if got := socketsIn(t, nsIno); len(got) != 0 {
		t.Errorf("after Run returned: %d sockets still in the namespace: %q", len(got), got)
	}
	// Lookups after Run (a deregistration on stop) refill the pool; Close
	// empties it for good.
	lookups()
	if got := socketsIn(t, nsIno); len(got) == 0 {
		t.Errorf("lookups after Run kept no socket: the pool is not exercised")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := socketsIn(t, nsIno); len(got) != 0 {
		t.Errorf("after Close: %d sockets still in the namespace: %q", len(got), got)
	}
	if after := fdCount(t); after != before {
		t.Errorf("%d descriptors open after Close, %d before", after, before)
	}
}
