package netmon

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/topo"
)

var record = flag.Bool("record", false, "re-record testdata/*.nlrec from a real kernel (root)")

// recorder writes every datagram the monitor reads to a recording.
type recorder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (r *recorder) tap(section string, d []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(&r.b, "%s %s\n", section, hex.EncodeToString(d))
}

func recordMonitor(t *testing.T, nd *topo.Node, o Options) (*Monitor, *recorder, func()) {
	h, err := nd.Handle()
	if err != nil {
		t.Fatal(err)
	}
	o.Netns = h
	o.Logger = testLogger(t)
	m := New(o)
	rec := &recorder{}
	m.k.(*nlKernel).tap = rec.tap
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	go func() {
		for {
			ev, err := m.Next(ctx)
			if err != nil {
				return
			}
			t.Logf("event %s", ev)
		}
	}()
	return m, rec, func() {
		cancel()
		<-done
		h.Close()
	}
}

func writeRecording(t *testing.T, name, comment string, rec *recorder) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	out := "# " + comment + "\n" + rec.b.String()
	if err := os.WriteFile("testdata/"+name+".nlrec", []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRecord re-records the replay testdata: go test -run TestRecord -record.
func TestRecord(t *testing.T) {
	if !*record {
		t.Skip("only with -record")
	}
	topo.RequireRoot(t)

	t.Run("host", func(t *testing.T) {
		n := topo.New(t)
		r, h := n.Node("router"), n.Node("host")
		h.Sysctl(t, "net.ipv6.conf.eth0.use_tempaddr", "2")
		h.WaitAddrs(t, "eth0", topo.LinkLocal, 10*time.Second)
		r.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:9::1/64", "dev", "eth0", "nodad")
		_, rec, stop := recordMonitor(t, h, Options{})
		time.Sleep(500 * time.Millisecond)
		ra := topo.RA{Managed: true, Prefixes: []topo.PIO{
			{Prefix: "2001:db8:1::/64", Valid: 9000 * time.Second, Preferred: 5000 * time.Second},
			{Prefix: "fd12:3456:789a:1::/64", Valid: 600 * time.Second, Preferred: 300 * time.Second},
		}}
		rd := r.StartRadvd(t, ra)
		time.Sleep(3 * time.Second)
		h.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:5::10/64", "dev", "eth0")
		h.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:6::20/128", "dev", "eth0", "valid_lft", "3600", "preferred_lft", "1800")
		h.MustExec(t, "ip", "-6", "addr", "add", "2001:db8:9::1/64", "dev", "eth0")
		time.Sleep(2500 * time.Millisecond)
		ra.Other = true
		rd.Update(t, ra)
		time.Sleep(1500 * time.Millisecond)
		h.SetCarrier(t, "eth0", false)
		time.Sleep(500 * time.Millisecond)
		h.SetCarrier(t, "eth0", true)
		time.Sleep(3 * time.Second)
		h.MustExec(t, "ip", "-6", "addr", "del", "2001:db8:5::10/64", "dev", "eth0")
		time.Sleep(500 * time.Millisecond)
		stop()
		writeRecording(t, "host", "host with radvd (M, then M+O), use_tempaddr=2, static 2001:db8:5::10, DHCPv6-like 2001:db8:6::20/128, duplicate 2001:db8:9::1, carrier down/up, static removed", rec)
	})

	t.Run("burst", func(t *testing.T) {
		n := topo.New(t)
		h := n.Node("host")
		h.MustExec(t, "ip", "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1")
		h.MustExec(t, "ip", "link", "set", "dummy1", "up")
		h.MustExec(t, "ip", "link", "set", "dummy0", "up")
		time.Sleep(2 * time.Second)
		_, rec, stop := recordMonitor(t, h, Options{RecvBufSize: 32 << 20})
		time.Sleep(500 * time.Millisecond)
		var b strings.Builder
		for i := range 1000 {
			fmt.Fprintf(&b, "addr add 2001:db8:10::%x/64 dev dummy0\n", i+1)
		}
		f := t.TempDir() + "/batch"
		os.WriteFile(f, []byte(b.String()), 0o644)
		h.MustExec(t, "ip", "-6", "-batch", f)
		time.Sleep(3 * time.Second)
		stop()
		writeRecording(t, "burst", "1000 addresses added on dummy0 (a veth), with DAD", rec)
	})
}
