package dhcp6test

import (
	"context"
	"encoding/hex"
	"net/netip"
	"testing"
	"time"

	"github.com/addrreg/addrreg/internal/refserver"
	"github.com/addrreg/addrreg/test/topo"
)

// Binding is one address the reference server holds, as leasequery
// (RFC 5007) reports it.
type Binding struct {
	DUID             string // hex
	Addr             netip.Addr
	Preferred, Valid uint32 // remaining lifetimes, seconds
}

// Bindings asks the reference server with q (by address or by client ID;
// q.Server defaults to [::1]:547) from inside nd, in this process with
// refserver.Query, and returns the bindings of its answer by address. A
// failed query or a status other than Success fails the test.
func Bindings(t testing.TB, nd *topo.Node, q refserver.QueryOptions) map[netip.Addr]Binding {
	t.Helper()
	var r *refserver.LeasequeryReply
	if err := nd.Do(func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		r, err = refserver.Query(ctx, q)
		return err
	}); err != nil {
		t.Fatalf("leasequery from %s: %v", nd.Name, err)
	}
	if r.Status != refserver.StatusSuccess {
		t.Fatalf("leasequery from %s: status %s %q", nd.Name, refserver.StatusText(r.Status), r.Message)
	}
	m := map[netip.Addr]Binding{}
	for _, c := range r.Clients {
		for _, a := range c.Addrs {
			m[a.Addr] = Binding{DUID: hex.EncodeToString(c.DUID), Addr: a.Addr, Preferred: a.Preferred, Valid: a.Valid}
		}
	}
	return m
}

// WaitBindings polls Bindings until cond holds and returns them; it fails
// the test, naming what it waited for, after timeout.
func WaitBindings(t testing.TB, nd *topo.Node, q refserver.QueryOptions, what string, timeout time.Duration,
	cond func(map[netip.Addr]Binding) bool) map[netip.Addr]Binding {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b := Bindings(t, nd, q)
		if cond(b) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("server bindings never showed %s within %v; have %v", what, timeout, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// HoldsAll is a WaitBindings condition: every one of addrs is bound.
func HoldsAll(addrs ...netip.Addr) func(map[netip.Addr]Binding) bool {
	return func(b map[netip.Addr]Binding) bool {
		for _, a := range addrs {
			if _, ok := b[a]; !ok {
				return false
			}
		}
		return true
	}
}
