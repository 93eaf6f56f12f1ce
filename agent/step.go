package agent

import "time"

// The machine's transition function: step applies one event and returns
// the effects; wakeUp is what is due when the one timer fires.

// step is the transition function: it applies ev at now and returns the
// effects, in the order the loop must perform them.
func (m *machine) step(now time.Time, ev event) []effect {
	m.now, m.out = now, nil
	changed := true
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
	if changed && !m.stopping {
		m.stateChanged()
	}
	if !m.stopping && m.fatal == nil {
		m.pump()
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
	if !m.beatAt.IsZero() && !m.beatAt.After(m.now) {
		m.beatAt = m.now.Add(m.cfg.HeartbeatInterval)
		m.emit(effHeartbeat{m.summarize()})
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
