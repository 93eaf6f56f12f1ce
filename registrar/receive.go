// The socket loop: Run reads datagrams and hands each to its exchange.

package registrar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// datagram is one received reply, parsed, with the address and interface it
// arrived on.
type datagram struct {
	m       message // parsed from its own copy of the bytes
	dst     netip.Addr
	ifindex int
	src     netip.Addr // the server's address (servers.go)
}

// Run receives datagrams and hands each to the exchange whose transaction ID
// it carries, until ctx is done (it then returns nil). A failed read is
// retried with a capped backoff; a socket closed under it (not by ctx) or
// broken beyond retry ends Run with an error wrapping ErrSocketBroken. It
// closes the socket when it returns.
func (r *Registrar) Run(ctx context.Context) error {
	defer r.Close()
	stop := context.AfterFunc(ctx, func() { r.Close() })
	defer stop()
	buf := make([]byte, 65536)
	var (
		fails    int
		failFrom time.Time
	)
	for {
		n, dst, ifindex, src, err := r.conn.recv(buf)
		if err == nil {
			if fails > 0 {
				r.log.Info("registrar receiving again", "failed_reads", fails, "for", r.clock.Now().Sub(failFrom))
				fails = 0
			}
			r.dispatch(buf[:n], dst, ifindex, src)
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if fatalSocketError(err) {
			return fmt.Errorf("%w: receive: %w", ErrSocketBroken, err)
		}
		r.mu.Lock()
		r.stats.RecvErrors++
		r.mu.Unlock()
		fails++
		if fails == 1 {
			failFrom = r.clock.Now()
			// A raw socket reports little but ENOBUFS-like trouble here;
			// losing a datagram is what retransmission is for.
			r.log.Warn("registrar receive failed; retrying with backoff", "err", err)
		} else if d := r.clock.Now().Sub(failFrom); d >= recvGiveUp {
			return fmt.Errorf("%w: every read failed for %v: %w", ErrSocketBroken, d.Round(time.Second), err)
		}
		if err := r.sleep(ctx, recvBackoff(fails)); err != nil {
			return nil
		}
	}
}

// Receive-error backoff: 10 ms doubling to 1 s; a socket whose every read
// fails for recvGiveUp is broken beyond retry.
const (
	recvBackoffMin = 10 * time.Millisecond
	recvBackoffMax = time.Second
	recvGiveUp     = time.Minute
)

func recvBackoff(fails int) time.Duration {
	d := recvBackoffMin
	for i := 1; i < fails && d < recvBackoffMax; i++ {
		d *= 2
	}
	return min(d, recvBackoffMax)
}

// fatalSocketError reports errors no retry can cure: the descriptor is
// closed or is not (any more) the socket, or it was destroyed (SOCK_DESTROY,
// "ss -K").
func fatalSocketError(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, unix.EBADF) ||
		errors.Is(err, unix.ENOTSOCK) || errors.Is(err, unix.ECONNABORTED)
}

// dispatch parses one datagram and queues it to its exchange.
func (r *Registrar) dispatch(b []byte, dst netip.Addr, ifindex int, src netip.Addr) {
	m, err := parseDatagram(b)
	if err != nil {
		r.drop(DropMalformed, xid{}, dst, ifindex)
		return
	}
	if m.typ == msgAddrRegInform { // RFC 9686 §4.2: clients discard them
		r.drop(DropInform, m.xid, dst, ifindex)
		return
	}
	r.mu.Lock()
	ex := r.exchanges[m.xid]
	r.mu.Unlock()
	if ex == nil {
		r.drop(DropTransaction, m.xid, dst, ifindex)
		return
	}
	own := append([]byte(nil), b...) // m refers to b, which is reused
	m, _ = parseDatagram(own)
	select {
	case ex.ch <- datagram{m: m, dst: dst, ifindex: ifindex, src: src}:
	default:
		r.drop(DropBacklog, m.xid, dst, ifindex)
	}
}

func (r *Registrar) drop(why DropReason, x xid, dst netip.Addr, ifindex int) {
	r.mu.Lock()
	r.stats.Dropped[why]++
	r.mu.Unlock()
	if r.debug() {
		r.log.LogAttrs(context.Background(), slog.LevelDebug, "reply dropped", slog.String("reason", string(why)),
			slog.Any("xid", x), slog.Any("iface", r.iface(ifindex)), slog.Any("addr", dst))
	}
}
