// Exchange bookkeeping and retransmission (RFC 8415 §15), shared by
// Register and Probe; a send the kernel refuses counts as a lost
// transmission (sendErr).

package registrar

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/scheduler"
)

// exchange is one outstanding transaction; Run hands it datagrams whose
// transaction ID matches.
type exchange struct {
	xid  xid
	ch   chan datagram
	stop chan struct{} // closed to end the exchange early; nil = never
	// For the one log line about refused sends.
	what  string // "ADDR-REG-INFORM" or "Information-Request"
	iface ifaceName
	addr  netip.Addr
}

// openExchange registers a new exchange under a fresh random transaction ID (RFC
// 8415 §16.1: new per exchange, from a good random source).
func (r *Registrar) openExchange() *exchange {
	ex := &exchange{ch: make(chan datagram, 8)}
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		rand.Read(ex.xid[:]) // never fails (crypto/rand, Go 1.24+)
		if r.exchanges[ex.xid] == nil {
			r.exchanges[ex.xid] = ex
			return ex
		}
	}
}

// closeExchange forgets ex: replies with its transaction ID are dropped from now on.
func (r *Registrar) closeExchange(ex *exchange) {
	r.mu.Lock()
	delete(r.exchanges, ex.xid)
	r.mu.Unlock()
}

// transact drives the transmissions of ex (RFC 8415 §15) until check
// accepts a datagram. transmit is called for every transmission with the
// time since the first. A transmission the kernel refuses (*refused: EPERM
// from a firewall, ENOBUFS, ENETDOWN, EINVAL from a full neighbour table …)
// counts as made and lost: the exchange keeps its transaction ID and its
// timers, and fails only when MRC or MRD runs out; the first refusal of
// an exchange is logged. It returns when the first transmission was due
// and nil, or an error from transmit or check, ErrExchangeFailed (noting
// refused sends), or ctx.Err().
func (r *Registrar) transact(ctx context.Context, ex *exchange, rt scheduler.Retrans,
	transmit func(elapsed time.Duration) error, check func(*datagram) (bool, error)) (time.Time, error) {
	var (
		start   time.Time
		bo      *scheduler.Backoff
		refusal int
		lastErr error
	)
	for {
		if err := ctx.Err(); err != nil {
			return start, err
		}
		now := r.clock.Now()
		elapsed := time.Duration(0)
		if bo == nil {
			start = now
		} else {
			elapsed = now.Sub(start)
		}
		if err := transmit(elapsed); err != nil {
			var rf *refused
			if !errors.As(err, &rf) {
				return start, err
			}
			refusal++
			lastErr = rf.err
			if refusal == 1 {
				r.log.Warn("send refused: counted as a lost transmission", "iface", ex.iface, "addr", ex.addr,
					"msg", ex.what, "xid", ex.xid, "err", rf.err)
			}
		}
		if bo == nil {
			bo = rt.Start(r.randFn)
		}
		wait, more := bo.Next(elapsed)
		// RT counts from the transmission: the time transmit took (a
		// netlink lookup of the lifetimes, the send) is part of it.
		wait = max(wait-r.clock.Now().Sub(now), 0)
		fired := make(chan struct{})
		tm := r.clock.AfterFunc(wait, func() { close(fired) })
		accepted, err := r.await(ctx, ex, fired, check)
		tm.Stop()
		switch {
		case err != nil:
			return start, err
		case accepted:
			r.mu.Lock()
			r.stats.Accepted++
			r.mu.Unlock()
			return start, nil
		case !more && refusal > 0:
			return start, fmt.Errorf("%w (%d of %d transmissions refused, last: %w)", ErrExchangeFailed, refusal, bo.Transmissions(), lastErr)
		case !more:
			return start, ErrExchangeFailed
		}
	}
}

// await waits for the timer or for a datagram check accepts.
func (r *Registrar) await(ctx context.Context, ex *exchange, fired <-chan struct{},
	check func(*datagram) (bool, error)) (bool, error) {
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-ex.stop:
			return false, errCollected
		case <-fired:
			// A reply queued as the timer fired still counts.
			for {
				select {
				case d := <-ex.ch:
					if ok, err := check(&d); ok || err != nil {
						return ok, err
					}
				default:
					return false, nil
				}
			}
		case d := <-ex.ch:
			if ok, err := check(&d); ok || err != nil {
				return ok, err
			}
		}
	}
}

func (r *Registrar) sleep(ctx context.Context, d time.Duration) error {
	fired := make(chan struct{})
	tm := r.clock.AfterFunc(d, func() { close(fired) })
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-fired:
		return nil
	}
}

// errnoName names err's errno for the SendErrors counter.
func errnoName(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		if n := unix.ErrnoName(errno); n != "" {
			return n
		}
		return "errno " + strconv.Itoa(int(errno))
	}
	return "other"
}

// refused marks a transmission the kernel refused: lost, like one dropped
// on the way (RFC 8415 §15 retransmission covers both).
type refused struct{ err error }

func (e *refused) Error() string { return e.err.Error() }
func (e *refused) Unwrap() error { return e.err }

// sendErr classifies a failed send: fatal errors are returned as they are
// (the exchange ends), any other is counted and returned as *refused.
func (r *Registrar) sendErr(err error) error {
	if fatalSocketError(err) {
		return err
	}
	r.mu.Lock()
	r.stats.SendErrors[errnoName(err)]++
	r.mu.Unlock()
	return &refused{err}
}
