package agent

// Pacing: exchanges wait in one queue and start no faster than Config.Rate
// (bursts of Config.Burst), at most Config.MaxInflight at once, so a
// renumbering of thousands of addresses or a start-up does not flood the
// link or the server.

type action int

const (
	actNone action = iota
	actRegister
	actDeregister
)

// next decides what the key at the front of the queue needs now.
func (m *machine) next(k key) action {
	ifc, ok := m.ifaces[k.ifindex]
	if _, owed := m.deregDue[k]; owed {
		if ok && !ifc.up {
			return actNone // still owed: the link's return queues it (handleLink)
		}
		return actDeregister
	}
	if !ok {
		return actNone
	}
	ad, ok := ifc.addrs[k.addr]
	if !ok || !m.eligible(ifc, ad) {
		return actNone
	}
	if ad.inFlight() {
		ad.run = exchangingRecheck
		return actNone
	}
	if !m.raAllows(ifc) {
		// The RA condition lapsed (discovery.go, raFlags): hold this
		// registration, refresh or retry until it is back.
		ad.run = pausedForRA
		return actNone
	}
	if m.deregInFlight[k].count > 0 {
		// Removed and re-added while its deregistration is being sent:
		// register after it (handleResult), not racing it on the wire.
		return actNone
	}
	return actRegister
}

// pump starts queued exchanges within the in-flight bound and the rate.
// Keys that need nothing any more are dropped without using a token; when
// the rate holds the front back, the wake-up is set for its token.
func (m *machine) pump() {
	for m.queue.len() > 0 && m.inflight < m.cfg.MaxInflight && !m.stopping {
		k, _ := m.queue.front()
		act := m.next(k)
		if act != actNone {
			r := m.lim.ReserveN(m.now, 1)
			if d := r.DelayFrom(m.now); d > 0 {
				r.CancelAt(m.now)
				if m.paceAt.IsZero() {
					m.paceAt = m.now.Add(d)
				}
				return
			}
		}
		m.queue.pop()
		switch act {
		case actRegister:
			m.startRegistration(k)
		case actDeregister:
			// The address is gone: no reply can reach it (RFC 9686 §4.7).
			m.startDeregistration(k, true)
		}
	}
}
