package registrar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/addrreg/addrreg/scheduler"
)

// probeCollect is how long Probe keeps listening after a Reply without
// option 148 for another server's Reply with it.
const probeCollect = time.Second

// errCollected ends a probe's exchange once its collection time is over.
var errCollected = errors.New("probe: collection time over")

// Probe asks the DHCPv6 servers on interface ifindex whether they support
// address registration (RFC 9686 §4.1): after a random delay of up to
// DiscoveryMaxDelay it sends an Information-Request from linkLocal whose ORO
// includes OPTION_ADDR_REG_ENABLE, retransmitted per Config.Discovery until a
// Reply with its transaction ID arrives on that interface, for that address.
// supported reports whether that Reply carries option 148; after a Reply
// without it, Probe listens one second more (not retransmitting) in case
// another server on the link answers with it. Without MRC or MRD
// it only ends with a Reply or ctx; err then wraps ctx.Err().
func (r *Registrar) Probe(ctx context.Context, ifindex int, linkLocal netip.Addr) (supported bool, err error) {
	if ifindex <= 0 || !linkLocal.Is6() || !linkLocal.IsLinkLocalUnicast() {
		return false, fmt.Errorf("probe ifindex %d from %s: invalid interface or non link-local address", ifindex, linkLocal)
	}
	src := linkLocal.WithZone("")
	if d := r.cfg.DiscoveryMaxDelay; d > 0 {
		if err := r.sleep(ctx, scheduler.InitialDelay(d, r.randFn)); err != nil {
			return false, fmt.Errorf("probe %s: %w", r.iface(ifindex), err)
		}
	}
	ex := r.openExchange()
	defer r.closeExchange(ex)
	ex.what, ex.iface, ex.addr = "Information-Request", r.iface(ifindex), src
	e := expect{typ: msgReply, xid: ex.xid, ifindex: ifindex, dst: src, clientID: r.clientID}
	sends := 0
	buf := make([]byte, 0, 128)
	transmit := func(elapsed time.Duration) error {
		buf = appendInfoRequest(buf[:0], ex.xid, r.clientID, elapsed)
		if err := r.conn.send(buf, ifindex, src); err != nil {
			return r.sendErr(err)
		}
		sends++
		r.mu.Lock()
		r.stats.Probes++
		r.mu.Unlock()
		if r.debug() {
			r.log.LogAttrs(ctx, slog.LevelDebug, "Information-Request sent", slog.Any("iface", r.iface(ifindex)),
				slog.Any("addr", src), slog.Any("xid", ex.xid), slog.Int("send", sends), slog.Duration("elapsed", elapsed))
		}
		return nil
	}
	// A link may have several servers, not all of them registration
	// servers: after a Reply without option 148, listen probeCollect longer
	// (without retransmitting) for one with it.
	var collect scheduler.Timer
	ex.stop = make(chan struct{})
	check := func(d *datagram) (bool, error) {
		if why := validate(&d.m, d.dst, d.ifindex, &e, nil); why != "" {
			r.drop(why, d.m.xid, d.dst, d.ifindex)
			return false, nil
		}
		if d.m.addrRegEnable {
			r.noteServer(d)
			supported = true
			return true, nil
		}
		if collect == nil {
			collect = r.clock.AfterFunc(probeCollect, func() { close(ex.stop) })
		}
		return false, nil
	}
	transmit0 := transmit
	transmit = func(elapsed time.Duration) error {
		if collect != nil {
			return errCollected // a Reply came: no more Information-Requests
		}
		return transmit0(elapsed)
	}
	_, err = r.transact(ctx, ex, r.cfg.Discovery, transmit, check)
	if errors.Is(err, errCollected) {
		// A retransmission came due inside the window: listen out the
		// rest of it (until ex.stop) rather than cutting it short.
		var accepted bool
		if accepted, err = r.await(ctx, ex, nil, check); accepted {
			err = nil
		}
	}
	if collect != nil {
		collect.Stop()
		if errors.Is(err, errCollected) || errors.Is(err, ErrExchangeFailed) {
			err = nil // answered, without 148
		}
	}
	if err != nil {
		return false, fmt.Errorf("probe %s from %s (xid %s, %d sends): %w", r.iface(ifindex), src, ex.xid, sends, err)
	}
	if r.debug() {
		r.log.LogAttrs(ctx, slog.LevelDebug, "Reply to Information-Request", slog.Any("iface", r.iface(ifindex)),
			slog.Any("addr", src), slog.Any("xid", ex.xid), slog.Bool("addr_reg_enable", supported))
	}
	return supported, nil
}
