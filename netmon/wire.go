package netmon

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/addrreg/addrreg/scheduler"
)

// watchRAs listens for RAs on every interface of the namespace with one raw
// ICMPv6 socket bound to :: (RAs go to ff02::1, which every interface has
// joined) and records their routers' M/O flags and lifetimes. The kernel
// delivers ICMPv6 to raw sockets whether or not it processes RAs itself
// (accept_ra = 0), and checks nothing but the checksum: handleRA does the
// rest.
func (m *Monitor) watchRAs(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := m.listenRAs(ctx)
		if ctx.Err() != nil {
			return
		}
		if isFatal(err) {
			// No CAP_NET_RAW: the kernel's flags are all there is.
			m.log.Error("RA listener stopped", "reason", err.Error())
			return
		}
		m.log.Warn("RA listener failed", "reason", err.Error(), "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (m *Monitor) listenRAs(ctx context.Context) error {
	c, err := openRASocket(m.o.Netns)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.close() })
	defer func() {
		if stop() {
			c.close()
		}
	}()
	for {
		b, src, oob, err := c.read()
		if err != nil {
			return err
		}
		index, hopLimit := parseRACmsgs(oob)
		m.handleRA(index, src, hopLimit, b)
	}
}

// handleRA applies one ICMPv6 message read from the wire on interface
// index: a valid RA updates the link's routers (see routers.observe),
// anything else is counted and logged (rate-limited) with its reason.
func (m *Monitor) handleRA(index int, src netip.Addr, hopLimit int, b []byte) {
	err := checkRASource(src, hopLimit)
	var ra raInfo
	if err == nil {
		ra, err = parseRA(b)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clk.Now()
	if err == nil {
		var exp time.Time
		if exp, err = m.st.setWire(index, src, ra, now); err == nil {
			m.raAccepts++
			m.armExpiry(exp)
			return
		}
	}
	m.ignoreRA(err, index, src, now)
}

// startRATimers lets router expiry and the ignored-RA log arm timers (for
// the routers already known too); stopRATimers stops them and writes what
// the log still holds. Both need mu not held.
func (m *Monitor) startRATimers() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.raLive = true
	m.armExpiry(m.st.expireRouters(m.clk.Now()))
}

func (m *Monitor) stopRATimers() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.raLive = false
	if m.expTimer != nil {
		m.expTimer.Stop()
		m.expTimer = nil
	}
	m.expAt = time.Time{}
	m.flushRADrops(m.clk.Now())
}

// armExpiry makes the expiry timer fire by at (zero: nothing to expire).
// mu held.
func (m *Monitor) armExpiry(at time.Time) {
	if !m.raLive || at.IsZero() || (!m.expAt.IsZero() && !at.Before(m.expAt)) {
		return
	}
	d := at.Sub(m.clk.Now())
	if m.expTimer == nil {
		m.expTimer = m.clk.AfterFunc(d, m.expireRouters)
	} else {
		m.expTimer.Reset(d)
	}
	m.expAt = at
}

// expireRouters runs on the expiry timer: routers past their lifetime no
// longer count, and their flags with them (an RAFlags event follows when
// the link's flags change).
func (m *Monitor) expireRouters() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.raLive {
		return
	}
	m.expAt = time.Time{}
	m.armExpiry(m.st.expireRouters(m.clk.Now()))
}

// dropLog counts the RAs ignored, by reason, and rate-limits their log
// lines per reason: the first after a quiet interval is written at once,
// later ones are summed into one line per interval. Under the Monitor's mu.
type dropLog struct {
	every   time.Duration
	total   map[string]int
	reasons map[string]*dropNote
}

// dropNote sums the RAs ignored for one reason since its last line, with
// the latest one's details.
type dropNote struct {
	count  int
	iface  string
	src    netip.Addr
	detail error
	last   time.Time       // when its last line was written
	timer  scheduler.Timer // writes it at last+every
}

// raReasons are the reasons an RA from the wire is ignored.
var raReasons = []error{errRANotLinkLocal, errRAHopLimit, errRAMalformed, errRATableFull, errRANoLink}

func raReason(err error) string {
	for _, r := range raReasons {
		if errors.Is(err, r) {
			return r.Error()
		}
	}
	return err.Error()
}

// ignoreRA counts an RA not used, for err, and logs it (rate-limited). mu
// held.
func (m *Monitor) ignoreRA(err error, index int, src netip.Addr, now time.Time) {
	d := &m.raDrops
	r := raReason(err)
	if d.total == nil {
		d.total, d.reasons = map[string]int{}, map[string]*dropNote{}
	}
	d.total[r]++
	if errors.Is(err, errRANoLink) {
		// A link netlink has not reported yet (just created): not an attack.
		m.log.Debug("RA ignored", "reason", r, "ifindex", index, "src", src)
		return
	}
	n := d.reasons[r]
	if n == nil {
		n = &dropNote{}
		d.reasons[r] = n
	}
	n.count++
	n.src, n.detail = src, err
	n.iface = ""
	if l, ok := m.st.links[index]; ok {
		n.iface = l.Name
	}
	if n.last.IsZero() || now.Sub(n.last) >= d.every {
		m.writeRADrops(r, n, now)
		return
	}
	if n.timer == nil && m.raLive {
		var tm scheduler.Timer
		tm = m.clk.AfterFunc(n.last.Add(d.every).Sub(now), func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if n.timer != tm {
				return // stopped or replaced while it waited for mu
			}
			n.timer = nil
			m.writeRADrops(r, n, m.clk.Now())
		})
		n.timer = tm
	}
}

// writeRADrops writes the line for reason r if RAs were ignored for it
// since its last line. mu held.
func (m *Monitor) writeRADrops(r string, n *dropNote, now time.Time) {
	if n.count == 0 {
		return
	}
	attrs := []any{"reason", r, "count", n.count, "total", m.raDrops.total[r], "iface", n.iface, "src", n.src, "err", n.detail.Error()}
	if r == errRATableFull.Error() {
		attrs = append(attrs, "max_routers", m.o.MaxRouters)
	}
	m.log.Warn("RAs ignored", attrs...)
	n.count, n.last = 0, now
	if n.timer != nil {
		n.timer.Stop()
		n.timer = nil
	}
}

// flushRADrops stops the log's timers and writes every pending line. mu
// held.
func (m *Monitor) flushRADrops(now time.Time) {
	for _, r := range slices.Sorted(maps.Keys(m.raDrops.reasons)) {
		n := m.raDrops.reasons[r]
		if n.timer != nil {
			n.timer.Stop()
			n.timer = nil
		}
		m.writeRADrops(r, n, now)
	}
}
