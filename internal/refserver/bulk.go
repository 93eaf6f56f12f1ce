package refserver

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// Bulk Leasequery (RFC 5460) over TCP port 547: every DHCPv6 message on the
// connection is preceded by its length in two octets (§5.1). A query is
// answered by one LEASEQUERY-REPLY (status, or the first client data), then
// one LEASEQUERY-DATA per further client data, then LEASEQUERY-DONE (§6.3),
// all with the query's transaction ID. Several queries may follow one
// another on a connection; they are answered in order.

const (
	// bulkMaxAddrs is how many addresses one OPTION_CLIENT_DATA carries in
	// a bulk answer: a message is at most 65,535 octets (two-octet framing),
	// so a client with more addresses is sent in several, each with its
	// Client ID.
	bulkMaxAddrs = 1024
	// BulkIdleTimeout closes a connection on which no query arrives.
	BulkIdleTimeout = 30 * time.Second
	// bulkMaxConns bounds the connections served at once; more are closed
	// at once (RFC 5460 §6.2 lets a server limit them).
	bulkMaxConns = 16
)

// ErrFrame is a TCP framing error: a length field cut short, or a message
// cut short by the end of the stream.
var ErrFrame = errors.New("bulk leasequery framing")

// readFrame reads one length-prefixed message (RFC 5460 §5.1). io.EOF
// means the stream ended cleanly between messages.
func readFrame(r io.Reader, buf []byte) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("%w: length: %w", ErrFrame, err)
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("%w: %d-octet message: %w", ErrFrame, n, err)
	}
	return buf, nil
}

// appendFrame appends msg with its length prefix.
func appendFrame(b, msg []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// serveBulk answers the queries arriving on rw from requestor until the
// stream ends or a message is malformed (then the connection is closed:
// RFC 5460 §6.2). Everything written is framed.
func (h *Handler) serveBulk(rw io.ReadWriter, requestor netip.Addr, now func() time.Time) error {
	r := bufio.NewReader(rw)
	w := bufio.NewWriter(rw)
	var in []byte
	for {
		msg, err := readFrame(r, in)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		in = msg
		if err := h.bulkQuery(w, msg, requestor, now()); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return fmt.Errorf("bulk leasequery to %s: %w", requestor, err)
		}
	}
}

// bulkQuery answers one message. Anything but a LEASEQUERY is an error
// that ends the connection, as are RFC 5007 §4.2.1's discard rules.
func (h *Handler) bulkQuery(w io.Writer, msg []byte, requestor netip.Addr, now time.Time) error {
	if len(msg) < msgHeaderLen {
		return fmt.Errorf("%w: %d-octet message", ErrTruncated, len(msg))
	}
	if mt := dhcpv6.MessageType(msg[0]); mt != dhcpv6.MessageTypeLeaseQuery {
		return fmt.Errorf("%w: %s on a bulk leasequery connection", ErrWrongType, mt)
	}
	opts, err := parseOptions(msg[msgHeaderLen:])
	if err != nil {
		return err
	}
	xid := [3]byte(msg[1:4])
	cid, q, err := h.checkLeasequery(opts, requestor)
	if err != nil {
		return err
	}
	header := func(mt dhcpv6.MessageType) []byte {
		b := appendMsgHeader(make([]byte, 0, 256), mt, xid)
		b = appendOption(b, uint16(dhcpv6.OptionServerID), h.cfg.ServerDUID)
		return appendOption(b, uint16(dhcpv6.OptionClientID), cid)
	}
	send := func(b []byte) error {
		if _, err := w.Write(appendFrame(nil, b)); err != nil {
			return fmt.Errorf("bulk leasequery to %s: %w", requestor, err)
		}
		return nil
	}
	res := h.runQuery(now, q, requestor, true)
	reply := header(dhcpv6.MessageTypeLeaseQueryReply)
	if res.status != StatusSuccess {
		// An error ends the query: no LEASEQUERY-DONE (RFC 5460 §6.3).
		return send(appendStatus(reply, res.status, res.text))
	}
	first := true
	for _, c := range res.clients {
		for len(c.addrs) > 0 {
			part := c
			part.addrs = c.addrs[:min(len(c.addrs), bulkMaxAddrs)]
			c.addrs = c.addrs[len(part.addrs):]
			if first {
				reply = appendClientData(reply, part)
				if err := send(reply); err != nil {
					return err
				}
				first = false
				continue
			}
			// RFC 5460 §5.4: LEASEQUERY-DATA carries only client data.
			data := appendMsgHeader(make([]byte, 0, 64+clientDataLen(part)), dhcpv6.MessageTypeLeaseQueryData, xid)
			if err := send(appendClientData(data, part)); err != nil {
				return err
			}
		}
	}
	if first {
		if err := send(reply); err != nil { // nothing found: the REPLY alone
			return err
		}
	}
	return send(header(dhcpv6.MessageTypeLeaseQueryDone))
}

// bulkListener accepts Bulk Leasequery connections for a Server.
type bulkListener struct {
	s     *Server
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// listenBulk listens on TCP [::]:547 (RFC 5460 §5.2).
func (s *Server) listenBulk() (*bulkListener, error) {
	ln, err := net.Listen("tcp6", "[::]:547")
	if err != nil {
		return nil, fmt.Errorf("listen on tcp [::]:547: %w", err)
	}
	return &bulkListener{s: s, ln: ln, conns: make(map[net.Conn]struct{})}, nil
}

// serve accepts until close.
func (l *bulkListener) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		l.mu.Lock()
		if l.conns == nil || len(l.conns) >= bulkMaxConns {
			l.mu.Unlock()
			l.s.count("bulk-refused")
			c.Close()
			continue
		}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			l.serveConn(c)
			l.mu.Lock()
			delete(l.conns, c)
			l.mu.Unlock()
		}()
	}
}

func (l *bulkListener) serveConn(c net.Conn) {
	defer c.Close()
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	requestor := ap.Addr().WithZone("").Unmap()
	l.s.count("bulk-connection")
	rw := &idleConn{Conn: c}
	if err := l.s.h.Load().serveBulk(rw, requestor, l.s.clock.Now); err != nil {
		l.s.count(ErrMalformed.Name)
		l.s.log.Info("bulk leasequery connection closed", "addr", requestor, "reason", ReasonName(err), "err", err)
	}
}

// close stops accepting, closes every connection and waits for them.
func (l *bulkListener) close() {
	l.ln.Close()
	l.mu.Lock()
	for c := range l.conns {
		c.Close()
	}
	l.conns = nil
	l.mu.Unlock()
	l.wg.Wait()
}

// idleConn gives each read BulkIdleTimeout and each write as long.
type idleConn struct{ net.Conn }

func (c *idleConn) Read(p []byte) (int, error) {
	_ = c.SetReadDeadline(time.Now().Add(BulkIdleTimeout))
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	_ = c.SetWriteDeadline(time.Now().Add(BulkIdleTimeout))
	return c.Conn.Write(p)
}

// BulkQuery asks q over TCP (RFC 5460) and gathers the LEASEQUERY-REPLY and
// every LEASEQUERY-DATA up to LEASEQUERY-DONE into one reply; the client
// data of one client may come in several parts. q.ByLink asks for every
// binding on q.LinkAddr (QUERY_BY_LINK_ADDRESS; 0::0: all).
func BulkQuery(ctx context.Context, q QueryOptions) (*LeasequeryReply, error) {
	if err := q.defaults(true); err != nil {
		return nil, err
	}
	var xid [3]byte
	_, _ = randRead(xid[:])
	var d net.Dialer
	ta := net.JoinHostPort(q.Server.Addr().String(), fmt.Sprint(q.Server.Port()))
	c, err := d.DialContext(ctx, "tcp6", ta)
	if err != nil {
		return nil, fmt.Errorf("bulk leasequery: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := c.Write(appendFrame(nil, q.encode(xid))); err != nil {
		return nil, fmt.Errorf("bulk leasequery to %s: %w", ta, err)
	}
	r := bufio.NewReader(c)
	var out *LeasequeryReply
	for {
		_ = c.SetReadDeadline(time.Now().Add(BulkIdleTimeout))
		msg, err := readFrame(r, nil)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("bulk leasequery from %s: %w", ta, err)
		}
		m, err := decodeBulkMessage(msg)
		if err != nil {
			return nil, fmt.Errorf("bulk leasequery from %s: %w", ta, err)
		}
		if m.XID != xid {
			continue // another query's: not ours
		}
		switch dhcpv6.MessageType(msg[0]) {
		case dhcpv6.MessageTypeLeaseQueryReply:
			if out != nil {
				return nil, fmt.Errorf("bulk leasequery from %s: a second LEASEQUERY-REPLY", ta)
			}
			out = m
			if out.Status != StatusSuccess {
				return out, nil // an error ends the query (RFC 5460 §6.3)
			}
		case dhcpv6.MessageTypeLeaseQueryData:
			if out == nil {
				return nil, fmt.Errorf("bulk leasequery from %s: LEASEQUERY-DATA before LEASEQUERY-REPLY", ta)
			}
			out.Clients = append(out.Clients, m.Clients...)
		case dhcpv6.MessageTypeLeaseQueryDone:
			if out == nil {
				return nil, fmt.Errorf("bulk leasequery from %s: LEASEQUERY-DONE before LEASEQUERY-REPLY", ta)
			}
			if m.Status != StatusSuccess {
				out.Status, out.Message = m.Status, m.Message
			}
			out.Clients = mergeClients(out.Clients)
			return out, nil
		}
	}
}

// decodeBulkMessage decodes a LEASEQUERY-REPLY, -DATA or -DONE.
func decodeBulkMessage(b []byte) (*LeasequeryReply, error) {
	if len(b) < msgHeaderLen {
		return nil, fmt.Errorf("%w: %d-byte message", ErrTruncated, len(b))
	}
	switch dhcpv6.MessageType(b[0]) {
	case dhcpv6.MessageTypeLeaseQueryReply, dhcpv6.MessageTypeLeaseQueryData, dhcpv6.MessageTypeLeaseQueryDone:
	default:
		return nil, fmt.Errorf("%w: %s", ErrWrongType, dhcpv6.MessageType(b[0]))
	}
	// The option walk is the LEASEQUERY-REPLY's.
	c := append([]byte{byte(dhcpv6.MessageTypeLeaseQueryReply)}, b[1:]...)
	return DecodeLeasequeryReply(c)
}

// mergeClients joins the parts of one client's data (same DUID, in order).
func mergeClients(cs []ClientData) []ClientData {
	var out []ClientData
	for _, c := range cs {
		if n := len(out); n > 0 && string(out[n-1].DUID) == string(c.DUID) {
			out[n-1].Addrs = append(out[n-1].Addrs, c.Addrs...)
			continue
		}
		out = append(out, c)
	}
	return out
}
