package agent

import (
	"time"

	"github.com/addrreg/addrreg/netmon"
)

// The machine's transition function: step applies one event and returns
// the effects; wakeUp is what is due when the one timer fires.

// step is the transition function: it applies ev at now and returns the
// effects, in the order the loop must perform them.
func (m *machine) step(now time.Time, ev event) []effect {
	m.now, m.out = now, nil
	changed := true
	k, local := m.localKey(ev)
	var before addrDigest
	if local {
		before = m.digest(k)
	}
	switch ev := ev.(type) {
	case evNetmon:
		if !m.stopping {
			m.handleEvent(ev.Event)
		}
	case evProbe:
		if !m.stopping {
			m.handleProbe(probeResult(ev))
		}
	case evResult:
		if m.stopping {
			m.stoppedResult(exchangeResult(ev))
		} else {
			m.handleResult(exchangeResult(ev))
		}
	case evTimer:
		changed = m.wakeUp()
	case evRediscover:
		if !m.stopping {
			m.rediscoverAll()
		}
	case evStop:
		m.stop()
	case evAbandon:
		m.abandon()
	case evHostName:
		if !m.stopping {
			m.hostNameChanged(ev.name)
		}
	}
	if !m.stopping && m.fatal == nil {
		m.pump()
	}
	if local && changed && m.digest(k) == before && !m.startedWork() {
		// An address event or exchange result that changed nothing the
		// state file or the summary shows (an RA re-announcing a prefix's
		// lifetimes, a refresh's reply): no work over all addresses for it.
		changed = false
	}
	if changed {
		m.summary = nil
		if !m.stopping {
			m.stateChanged()
		}
	}
	m.arm()
	out := m.out
	m.out = nil
	return out
}

// wakeUp handles whatever is due at m.now: refreshes and retries,
// re-probes, a paced start, the state file and the heartbeat. It reports
// whether anything but the state file and the heartbeat was due (those
// change nothing to save).
func (m *machine) wakeUp() bool {
	m.armedAt = time.Time{} // it fired
	if m.stopping {
		return false
	}
	worked := false
	if due := m.deadlines.PopDue(m.now); len(due) > 0 {
		m.handleDue(due)
		worked = true
	}
	for _, ifc := range m.ifaces {
		if !ifc.disc.next.IsZero() && !ifc.disc.next.After(m.now) {
			m.reprobe(ifc)
			worked = true
		}
	}
	if !m.paceAt.IsZero() && !m.paceAt.After(m.now) {
		m.paceAt = time.Time{} // pump, after this, starts what waited
		worked = true
	}
	if !m.stale.expiry.IsZero() && !m.stale.expiry.After(m.now) {
		m.dropStale()
		worked = true
	}
	if !m.saveAt.IsZero() && !m.saveAt.After(m.now) {
		m.saveState()
	}
	if worked {
		m.summary = nil
	}
	if !m.beatAt.IsZero() && !m.beatAt.After(m.now) {
		m.beatAt = m.now.Add(m.cfg.HeartbeatInterval)
		if m.summary == nil {
			sum := m.summarize()
			m.summary = &sum
		}
		m.emit(effHeartbeat{*m.summary})
	}
	return worked
}

// wake is the earliest thing due; zero when nothing is.
func (m *machine) wake() time.Time {
	var at time.Time
	earlier := func(t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	if !m.stopping {
		if t, ok := m.deadlines.Next(); ok {
			earlier(t)
		}
		for _, ifc := range m.ifaces {
			earlier(ifc.disc.next)
		}
		earlier(m.paceAt)
		earlier(m.stale.expiry)
		earlier(m.saveAt)
		earlier(m.beatAt)
	}
	return at
}

// arm asks the loop to move its timer when the earliest wake-up changed.
func (m *machine) arm() {
	if at := m.wake(); !at.Equal(m.armedAt) {
		m.armedAt = at
		m.emit(effTimer{at})
	}
}

// localKey reports whether ev is about one address alone, and which:
// netmon's report of a global address on a known interface (not a
// link-local one, which may start or stop discovery), or the result of an
// exchange for an address on a known interface.
func (m *machine) localKey(ev event) (key, bool) {
	if m.stopping {
		return key{}, false
	}
	if r, ok := ev.(evResult); ok {
		_, known := m.ifaces[r.k.ifindex]
		return r.k, known
	}
	e, ok := ev.(evNetmon)
	if !ok {
		return key{}, false
	}
	switch e.Kind {
	case netmon.AddrAdded, netmon.AddrUpdated, netmon.AddrRemoved:
	default:
		return key{}, false
	}
	ifc, ok := m.ifaces[e.Addr.Index]
	if !ok || e.Addr.Class == netmon.ClassLinkLocal || ifc.linkLocals[e.Addr.IP] {
		return key{}, false
	}
	return key{ifc.index, e.Addr.IP}, true
}

// addrDigest is what the state file and the summary show of one address
// (and how many stale entries wait, which its removal or deregistration
// may change).
type addrDigest struct {
	known, registered bool
	saved             savedAddr // its state-file entry; zero: none
	deregDue          bool
	deregInFlight     deregFlight
	stale             int
}

func (m *machine) digest(k key) addrDigest {
	ifc := m.ifaces[k.ifindex]
	d := addrDigest{deregInFlight: m.deregInFlight[k]}
	for _, list := range m.stale.byIface {
		d.stale += len(list)
	}
	d.saved, d.deregDue = m.deregDue[k]
	if ad, ok := ifc.addrs[k.addr]; ok {
		d.known, d.registered = true, ad.phase() == Registered
		if ad.held() {
			d.saved = m.savedOf(ifc, k.addr, ad)
		}
	}
	return d
}

// startedWork reports whether the step so far started or cancelled an
// exchange or a probe (which changes what the server may hold).
func (m *machine) startedWork() bool {
	for _, e := range m.out {
		switch e.(type) {
		case effExchange, effProbe, effCancel:
			return true
		}
	}
	return false
}
