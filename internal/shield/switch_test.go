package shield

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// TestRunFakePorts runs the Switch on fake ports: the receive loops
// forward, count a lost frame and stop at the end of the context, closing
// every port and leaving no goroutine behind.
func TestRunFakePorts(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fs := newFakeSwitch(t, SwitchConfig{Ports: []Port{{Name: "a", Trusted: true}, {Name: "b"}}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fs.Run(ctx) }()

	fs.conns["b"].deliver(nil, unix.ENETDOWN)
	fs.conns["b"].deliver(nil, nil) // our own transmission: ignored
	fs.conns["b"].deliver(echo(macBcast, macB), nil)
	select {
	case <-fs.conns["a"].wrote:
	case err := <-done:
		t.Fatalf("Run returned %v before forwarding", err)
	case <-time.After(5 * time.Second):
		t.Fatal("frame from b not forwarded to a within 5 s")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2 s of the end of its context")
	}
	st := fs.Stats()
	type counts struct{ RxFrames, RxErrors, Passed, TxFrames uint64 }
	var got []counts
	for _, p := range st.Ports {
		got = append(got, counts{p.RxFrames, p.RxErrors, p.Passed, p.TxFrames})
	}
	want := []counts{{TxFrames: 1}, {RxFrames: 1, RxErrors: 1, Passed: 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counters (-want +got):\n%s", diff)
	}
	for name, c := range fs.conns {
		if !c.closed {
			t.Errorf("port %s not closed after Run", name)
		}
	}
}

// TestRunErrors checks that Run returns the error of a port that fails to
// open or to read, naming the port, with every port it opened closed.
func TestRunErrors(t *testing.T) {
	errDial := errors.New("no such device")
	for _, tc := range []struct {
		name       string
		dialFails  string // the port whose dial fails
		readFails  string // the port whose read fails
		wantErr    string
		wantClosed map[string]bool
	}{
		{name: "dial", dialFails: "b", wantErr: "port b: no such device", wantClosed: map[string]bool{"a": true, "b": false}},
		{name: "read", readFails: "b", wantErr: "port b: receive: bad file descriptor", wantClosed: map[string]bool{"a": true, "b": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			fs := newFakeSwitch(t, SwitchConfig{Ports: []Port{{Name: "a", Trusted: true}, {Name: "b"}}})
			dial := fs.dial
			fs.dial = func(p Port) (frameConn, error) {
				if p.Name == tc.dialFails {
					return nil, fmt.Errorf("port %s: %w", p.Name, errDial)
				}
				return dial(p)
			}
			if tc.readFails != "" {
				fs.conns[tc.readFails].deliver(nil, unix.EBADF)
			}
			done := make(chan error, 1)
			go func() { done <- fs.Run(context.Background()) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return within 5 s of a failure")
			}
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("Run = %v, want %s", err, tc.wantErr)
			}
			got := map[string]bool{}
			for name, c := range fs.conns {
				got[name] = c.closed
			}
			if diff := cmp.Diff(tc.wantClosed, got); diff != "" {
				t.Errorf("ports closed (-want +got):\n%s", diff)
			}
		})
	}
}
