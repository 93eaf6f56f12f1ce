package netmon

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Ready closes only once the subscription is open and the dump applied:
// the state is then complete (addrregd's READY=1).
func TestReadyAfterSubscribeAndDump(t *testing.T) {
	link := newLinkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 2, "eth0", upFlags, 0)
	k := &fakeKernel{dumps: [][]message{{link}}}
	m := newMonitor(Options{Logger: testLogger(t)}, k)
	select {
	case <-m.Ready():
		t.Fatal("ready before Run")
	default:
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-m.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("not ready 5 s after Run")
	}
	k.mu.Lock()
	subs, dumps := k.subs, k.ndumps
	k.mu.Unlock()
	if subs < 1 || dumps < 1 {
		t.Errorf("ready after %d subscriptions and %d dumps, want both", subs, dumps)
	}
	if links, _ := m.Snapshot(); len(links) != 1 {
		t.Errorf("ready with %d links known, want the dump's 1", len(links))
	}
}
