package refserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// bigClient registers n addresses of lan1 for clientDUID in h.
func bigClient(t testing.TB, h *Handler, n int) []netip.Addr {
	t.Helper()
	var addrs []netip.Addr
	for i := range n {
		a := cliAddr.As16()
		a[13], a[14], a[15] = 0x10, byte(i>>8), byte(i)
		addr := netip.AddrFrom16(a)
		addrs = append(addrs, addr)
		if _, _, _, err := h.Handle(t0, pkt(addr, newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, clientDUID).ia(addr, 1800, 3600).bytes())); err != nil {
			t.Fatalf("register %d: %v", i, err)
		}
	}
	return addrs
}

// serveBulkTCP serves h's Bulk Leasequery on a loopback TCP port.
func serveBulkTCP(t *testing.T, h *Handler) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = h.serveBulk(c, netip.MustParseAddr("2001:db8:ff::5"), func() time.Time { return t0 })
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// TestBulkLeasequeryBigClient: a client holding 5,000 addresses. Over UDP
// the answer does not fit a datagram: a LEASEQUERY-REPLY says so (status
// UnspecFail, TooLargeText) instead of a send failing. Over TCP (RFC 5460)
// all 5,000 come back, by client ID, by link-address and by link 0::0; a
// query by address gives its client's data; an unknown query type and a
// requestor outside the allow list get their status codes.
func TestBulkLeasequeryBigClient(t *testing.T) {
	const n = 5000
	h := testHandler(func(c *HandlerConfig) { c.MaxBindingsPerDUID = 2 * n })
	addrs := bigClient(t, h, n)

	req := []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 5}
	udp := Packet{Data: EncodeLeasequery([3]byte{1, 2, 3}, req, netip.Addr{}, netip.Addr{}, clientDUID),
		Src: netip.MustParseAddrPort("[2001:db8:ff::5]:4000"), Iface: "lo"}
	reply, _, _, err := h.Handle(t0, udp)
	if err != nil {
		t.Fatal(err)
	}
	r, err := DecodeLeasequeryReply(reply)
	if err != nil || !r.TooLarge() || len(r.Clients) != 0 || len(reply) > MaxUDPLeasequeryReply {
		t.Fatalf("UDP answer for %d bindings: %+v (%d bytes), %v; want status UnspecFail %q", n, r, len(reply), err, TooLargeText)
	}

	srv := serveBulkTCP(t, h)
	ctx := context.Background()
	check := func(name string, q QueryOptions, want int) {
		t.Helper()
		q.Server, q.Requestor = srv, req
		r, err := BulkQuery(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := map[netip.Addr]bool{}
		for _, c := range r.Clients {
			if !bytes.Equal(c.DUID, clientDUID) {
				t.Errorf("%s: client %x, want %x", name, c.DUID, clientDUID)
			}
			for _, a := range c.Addrs {
				got[a.Addr] = true
				if a.Valid != 3600 || a.Preferred != 1800 {
					t.Errorf("%s: %s lifetimes %d/%d, want 1800/3600", name, a.Addr, a.Preferred, a.Valid)
				}
			}
		}
		if r.Status != StatusSuccess || len(got) != want || len(r.Clients) != min(want, 1) {
			t.Errorf("%s: status %d, %d clients, %d distinct addresses; want %d in one client", name, r.Status, len(r.Clients), len(got), want)
		}
	}
	check("by client ID", QueryOptions{ClientID: clientDUID}, n)
	check("by link-address", QueryOptions{ByLink: true, LinkAddr: lan1.Addr()}, n)
	check("all links", QueryOptions{ByLink: true}, n)
	check("by address", QueryOptions{Address: addrs[4321]}, n)
	check("unknown client", QueryOptions{ClientID: otherDUID}, 0)

	// A query type not served, and a requestor not allowed: status, no data.
	conn, err := net.Dial("tcp6", srv.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q := encodeLeasequery([3]byte{9, 9, 9}, req, QueryByRemoteID, netip.Addr{}, nil)
	if _, err := conn.Write(appendFrame(nil, q)); err != nil {
		t.Fatal(err)
	}
	msg, err := readFrame(conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := decodeBulkMessage(msg); err != nil || r.Status != StatusUnknownQueryType || r.XID != [3]byte{9, 9, 9} {
		t.Errorf("QUERY_BY_REMOTE_ID: %+v, %v; want UnknownQueryType", r, err)
	}
	var out bytes.Buffer
	in := bytes.NewReader(appendFrame(nil, EncodeLeasequery([3]byte{1, 1, 1}, req, netip.Addr{}, cliAddr, nil)))
	if err := h.serveBulk(struct {
		io.Reader
		io.Writer
	}{in, &out}, netip.MustParseAddr("2001:db8:99::1"), func() time.Time { return t0 }); err != nil {
		t.Fatal(err)
	}
	msg, err = readFrame(&out, nil)
	if r, derr := decodeBulkMessage(msg); err != nil || derr != nil || r.Status != StatusNotAllowed || out.Len() != 0 {
		t.Errorf("requestor not allowed: %+v, %v, %v, %d more bytes; want NotAllowed alone", r, err, derr, out.Len())
	}
}

// TestBulkFraming: the stream is cut into messages by their length; a
// stream cut short is a framing error and ends the connection; a message
// that is not a LEASEQUERY ends it too.
func TestBulkFraming(t *testing.T) {
	h := testHandler()
	q := EncodeLeasequery([3]byte{1, 2, 3}, []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 5}, netip.Addr{}, cliAddr, nil)
	for _, tc := range []struct {
		name   string
		stream []byte
		want   error // nil: ends cleanly
		msgs   int   // messages written back
	}{
		{"two queries", append(appendFrame(nil, q), appendFrame(nil, q)...), nil, 4},
		{"empty", nil, nil, 0},
		{"half a length", []byte{0}, ErrFrame, 0},
		{"short message", appendFrame(nil, q)[:len(q)], ErrFrame, 0},
		{"not a leasequery", appendFrame(nil, []byte{1, 2, 3, 4}), ErrWrongType, 0},
		{"zero length", []byte{0, 0}, ErrTruncated, 0},
	} {
		var out bytes.Buffer
		err := h.serveBulk(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(tc.stream), &out}, netip.MustParseAddr("2001:db8:ff::5"), func() time.Time { return t0 })
		if (tc.want == nil && err != nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
		n := 0
		for {
			if _, err := readFrame(&out, nil); err != nil {
				break
			}
			n++
		}
		if n != tc.msgs {
			t.Errorf("%s: %d messages back, want %d", tc.name, n, tc.msgs)
		}
	}
}

// FuzzBulkFraming feeds arbitrary TCP streams to the Bulk Leasequery
// connection handler: it must never panic, and what it writes back must be
// whole frames, each a LEASEQUERY-REPLY, -DATA or -DONE that decodes.
func FuzzBulkFraming(f *testing.F) {
	req := []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 5}
	xid := [3]byte{1, 2, 3}
	f.Add(appendFrame(nil, EncodeLeasequery(xid, req, netip.Addr{}, cliAddr, nil)))
	f.Add(appendFrame(appendFrame(nil, EncodeLeasequery(xid, req, netip.Addr{}, netip.Addr{}, clientDUID)),
		encodeLeasequery(xid, req, QueryByLinkAddress, netip.Addr{}, nil)))
	f.Add([]byte{0, 4, 14, 1, 2, 3})
	f.Add(binary.BigEndian.AppendUint16(nil, 0xffff))
	f.Fuzz(func(t *testing.T, stream []byte) {
		h := testHandler()
		if _, _, _, err := h.Handle(t0, pkt(cliAddr, validInform().bytes())); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		_ = h.serveBulk(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(stream), &out}, netip.MustParseAddr("2001:db8:ff::5"), func() time.Time { return t0 })
		for out.Len() > 0 {
			msg, err := readFrame(&out, nil)
			if err != nil {
				t.Fatalf("reply stream not framed: %v", err)
			}
			if _, err := decodeBulkMessage(msg); err != nil {
				t.Fatalf("reply %x does not decode: %v", msg, err)
			}
		}
	})
}
