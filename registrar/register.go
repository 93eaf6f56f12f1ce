package registrar

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/addrreg/addrreg/scheduler"
)

// Register runs one ADDR-REG-INFORM exchange for t (RFC 9686 §4.2–4.4) with
// a new transaction ID, kept across its retransmissions. t.Lifetimes is read
// at every transmission, so each carries the address's current lifetimes.
// It returns when a valid ADDR-REG-REPLY arrives (Result.Replied, nil), or
// with an error wrapping ErrExchangeFailed, ErrAddressGone or ctx.Err().
func (r *Registrar) Register(ctx context.Context, t Target) (Result, error) {
	// RFC 9686 §4.2: global scope only (ULA included); never link-local,
	// loopback or multicast. Anything finer is the caller's to decide.
	if t.Ifindex <= 0 || !t.Addr.Is6() || t.Addr.Is4In6() || !t.Addr.IsGlobalUnicast() || t.Lifetimes == nil {
		return Result{}, fmt.Errorf("register %s on ifindex %d: invalid target (need an IPv6 global unicast address, an interface and Lifetimes)", t.Addr, t.Ifindex)
	}
	addr := t.Addr.WithZone("")
	fqdn := r.fqdn
	if t.FQDN != "" {
		b, err := encodeFQDN(t.FQDN)
		if err != nil {
			return Result{}, fmt.Errorf("register %s on ifindex %d: FQDN %q: %w", t.Addr, t.Ifindex, t.FQDN, err)
		}
		fqdn = b
	}
	ex := r.openExchange()
	defer r.closeExchange(ex)
	ex.what, ex.iface, ex.addr = "ADDR-REG-INFORM", r.ifaceNamed(t.Ifindex, t.Ifname), addr
	e := expect{typ: msgAddrRegReply, xid: ex.xid, ifindex: t.Ifindex, dst: addr, iaAddr: true, clientID: r.clientID}
	assigned := func() bool { _, _, ok := t.Lifetimes(); return ok }

	var res Result
	buf := make([]byte, 0, 128)
	transmit := func(elapsed time.Duration) error {
		pref, valid, ok := t.Lifetimes()
		if !ok {
			return ErrAddressGone
		}
		buf = appendInform(buf[:0], &inform{
			xid: ex.xid, clientID: r.clientID, elapsed: elapsed, addr: addr,
			preferred: pref, valid: valid, fqdn: fqdn,
		})
		if err := r.conn.send(buf, t.Ifindex, addr); err != nil {
			return r.sendErr(err)
		}
		res.Sends++
		res.Preferred, res.Valid = max(pref, 0), max(valid, 0)
		res.LastSent = r.clock.Now()
		r.mu.Lock()
		r.stats.Sent++
		if res.Sends > 1 {
			r.stats.Retransmitted++
		}
		r.mu.Unlock()
		if r.debug() {
			r.log.LogAttrs(ctx, slog.LevelDebug, "ADDR-REG-INFORM sent", slog.Any("iface", ex.iface),
				slog.Any("addr", addr), slog.Any("xid", ex.xid), slog.Int("send", res.Sends),
				slog.Duration("preferred", pref), slog.Duration("valid", valid), slog.Duration("elapsed", elapsed))
		}
		return nil
	}
	check := func(d *datagram) (bool, error) {
		why := validate(&d.m, d.dst, d.ifindex, &e, assigned)
		switch why {
		case "":
			r.noteServer(d)
			return true, nil
		case DropAddressGone:
			r.drop(why, d.m.xid, d.dst, d.ifindex)
			return false, ErrAddressGone
		}
		r.drop(why, d.m.xid, d.dst, d.ifindex)
		return false, nil
	}
	rt := r.cfg.Retrans
	if t.Deregister {
		rt = scheduler.Retrans{IRT: rt.IRT, MRC: 1}
		if t.NoWait {
			err := transmit(0)
			if err != nil {
				err = fmt.Errorf("deregister %s on %s: %w", addr, ex.iface, err)
			}
			return res, err
		}
	}
	start, err := r.transact(ctx, ex, rt, transmit, check)
	if !start.IsZero() {
		res.Duration = r.clock.Now().Sub(start)
	}
	if err != nil {
		return res, fmt.Errorf("register %s on %s (xid %s, %d sends): %w", addr, ex.iface, ex.xid, res.Sends, err)
	}
	res.Replied = true
	if r.debug() {
		r.log.LogAttrs(ctx, slog.LevelDebug, "ADDR-REG-REPLY accepted", slog.Any("iface", ex.iface),
			slog.Any("addr", addr), slog.Any("xid", ex.xid), slog.Int("sends", res.Sends), slog.Duration("duration", res.Duration))
	}
	return res, nil
}
