package registrar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type failingConn struct {
	conn
	errs []error
}

func (c *failingConn) send([]byte, int, netip.Addr) error {
	err := c.errs[0]
	c.errs = c.errs[1:]
	return err
}

func TestSendErrorsByErrno(t *testing.T) {
	r, _, _ := fakeRegistrar(t, Config{}, 0.5)
	c := &countingConn{conn: &failingConn{errs: []error{
		fmt.Errorf("send to ff02::1:2: %w", syscall.ENETUNREACH),
		fmt.Errorf("send: %w", syscall.ENETUNREACH),
		syscall.EADDRNOTAVAIL,
		errors.New("no errno here"),
		nil,
	}}, r: r}
	for range 5 {
		_ = c.send(nil, 1, netip.Addr{})
	}
	want := map[string]uint64{"ENETUNREACH": 2, "EADDRNOTAVAIL": 1, "other": 1}
	if diff := cmp.Diff(want, r.SendErrors()); diff != "" {
		t.Errorf("SendErrors (-want +got):\n%s", diff)
	}
}

// The server whose reply was accepted is remembered per interface.
func TestServerRemembered(t *testing.T) {
	r, c, clock := fakeRegistrar(t, Config{}, 0.5)
	c.onSend = func(s sent) { r.deliver(replyTo(t, s, msgAddrRegReply)) }
	lt := func() (time.Duration, time.Duration, bool) { return time.Hour, time.Hour, true }
	if _, err := r.Register(context.Background(), Target{Ifindex: 3, Addr: testAddr, Lifetimes: lt}); err != nil {
		t.Fatal(err)
	}
	si, ok := r.Server(3)
	if !ok || !bytes.Equal(si.DUID, testServerID) || !si.At.Equal(clock.Now()) {
		t.Errorf("Server(3) = %+v, %v; want DUID %x at %v", si, ok, testServerID, clock.Now())
	}
	if _, ok := r.Server(4); ok {
		t.Error("Server(4) known without any reply there")
	}
}
