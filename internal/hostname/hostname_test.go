package hostname

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/scheduler"
	"github.com/addrreg/addrreg/test/topo"
)

func TestSpecific(t *testing.T) {
	for name, want := range map[string]bool{
		"host":                       true,
		"host.example.com":           true,
		"host.example.com.":          true,
		"":                           false,
		"(none)":                     false,
		"localhost":                  false,
		"LocalHost":                  false,
		"localhost.":                 false,
		"localhost.localdomain":      false,
		"localhost6.localdomain6":    false,
		"box.localhost":              false,
		"box.localhost.localdomain.": false,
		"localhost.example.com":      true, // a name under a real domain
		"notlocalhost":               true,
	} {
		if got := Specific(name); got != want {
			t.Errorf("Specific(%q) = %t, want %t", name, got, want)
		}
	}
}

// Without the sysctl file the watcher reads the name every Interval, on
// the injected clock: a change shows within one period, and setting the
// same name again reports nothing.
func TestWatcherFallback(t *testing.T) {
	clk := scheduler.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var mu sync.Mutex
	name := "first"
	set := func(n string) { mu.Lock(); name = n; mu.Unlock() }
	w, err := New(Options{Path: filepath.Join(t.TempDir(), "absent"), Clock: clk, Interval: 2 * time.Second,
		Read: func() string { mu.Lock(); defer mu.Unlock(); return name }})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if !w.Polling() || w.Current() != "first" {
		t.Fatalf("Polling %t, Current %q; want true, first", w.Polling(), w.Current())
	}
	type result struct {
		name string
		err  error
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan result, 1)
	next := func() {
		go func() { n, err := w.Next(ctx); got <- result{n, err} }()
	}
	next()
	// One period with the same name, then a change: reported at the
	// next period, not before.
	clk.BlockUntil(1)
	clk.Advance(2 * time.Second)
	clk.BlockUntil(1)
	set("second")
	clk.Advance(time.Second)
	select {
	case r := <-got:
		t.Fatalf("Next returned %+v before the period ended", r)
	default:
	}
	clk.Advance(time.Second)
	if r := <-got; r.err != nil || r.name != "second" || w.Current() != "second" {
		t.Fatalf("Next = %+v, Current %q; want second", r, w.Current())
	}
	next()
	clk.BlockUntil(1)
	cancel()
	if r := <-got; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Next after cancel = %+v, want context.Canceled", r)
	}
}

// The real thing: in a UTS namespace of its own (on a locked thread: the
// machine's name is never touched), a rename wakes the watcher's poll at
// once; setting the same name again does not report it; a cancelled
// context ends a poll under way.
func TestWatcherUTSNamespace(t *testing.T) {
	topo.RequireRoot(t)
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, in its own UTS namespace, ends
		// with this goroutine.
		runtime.LockOSThread()
		errc <- watchInNamespace(t)
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func watchInNamespace(t *testing.T) error {
	if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte("first")); err != nil {
		return err
	}
	w, err := New(Options{})
	if err != nil {
		return err
	}
	defer w.Close()
	if w.Polling() || w.Current() != "first" {
		return errors.New("watcher polls, or did not read the namespace's name")
	}
	ns, err := unix.Open("/proc/thread-self/ns/uts", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(ns)
	// rename sets the name from another thread that joins the namespace.
	rename := func(name string, after time.Duration) <-chan error {
		done := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: it joins the namespace
			time.Sleep(after)
			if err := unix.Setns(ns, unix.CLONE_NEWUTS); err != nil {
				done <- err
				return
			}
			done <- unix.Sethostname([]byte(name))
		}()
		return done
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	r := rename("second", 200*time.Millisecond)
	name, err := w.Next(ctx)
	if err != nil || name != "second" {
		return errors.Join(errors.New("Next after a rename did not return second: "+name), err)
	}
	t.Logf("rename seen %v after the watch began (the renamer waited 200ms)", time.Since(start).Round(time.Millisecond))
	if err := <-r; err != nil {
		return err
	}
	// The same name again, then a cancel: Next returns only the cancel.
	ctx2, cancel2 := context.WithCancel(context.Background())
	r = rename("second", 100*time.Millisecond)
	time.AfterFunc(500*time.Millisecond, cancel2)
	if name, err := w.Next(ctx2); !errors.Is(err, context.Canceled) {
		return errors.New("Next after setting the same name: " + name + ", want context.Canceled")
	}
	return <-r
}
