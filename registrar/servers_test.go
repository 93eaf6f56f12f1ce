package registrar

import (
	"bytes"
	"context"
	"testing"
	"time"
)

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
