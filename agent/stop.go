package agent

import (
	"slices"
	"time"
)

// The machine's end (evStop, evAbandon): what is owed goes out, once,
// within StopTimeout; nothing new starts.

// stop starts the end: registrations in flight are abandoned (cancelled).
// Removed addresses still owed a deregistration get it, and with
// DeregisterOnStop so does every address the server may hold: each is sent
// once without waiting for a reply, as many as the loop lets finish within
// StopTimeout (then evAbandon).
func (m *machine) stop() {
	if m.stopping {
		return
	}
	m.stopping = true
	var dereg []key
	for k := range m.deregDue {
		dereg = append(dereg, k)
	}
	for _, ifc := range m.ifaces {
		m.stopDiscovery(ifc)
		for ip, ad := range ifc.addrs {
			if ad.inFlight() {
				m.emit(effCancel{ad.gen})
				// Its INFORM may be out: the server may hold it (the
				// snapshot keeps it).
				ad.run = idle
				ad.hold.transmitted()
			}
			if m.cfg.DeregisterOnStop && m.cfg.Enable && ifc.up && ad.held() {
				dereg = append(dereg, key{ifc.index, ip})
			}
		}
	}
	slices.SortFunc(dereg, func(x, y key) int {
		if x.ifindex != y.ifindex {
			return x.ifindex - y.ifindex
		}
		return x.addr.Compare(y.addr)
	})
	m.queue.clear()
	m.paceAt, m.saveAt, m.beatAt = time.Time{}, time.Time{}, time.Time{}
	if len(dereg) > 0 {
		m.info("stopping: deregistering", "addresses", len(dereg))
	}
	m.stopDeregs = dereg
	m.startStopDeregistrations()
}

func (m *machine) startStopDeregistrations() {
	for len(m.stopDeregs) > 0 && m.inflight < m.cfg.MaxInflight {
		m.startDeregistration(m.stopDeregs[0], true)
		m.stopDeregs = m.stopDeregs[1:]
	}
}

// stoppedResult is an exchange's end while stopping.
func (m *machine) stoppedResult(r exchangeResult) {
	if m.inflight > 0 {
		m.inflight--
	}
	m.logResult(r)
	if r.dereg && r.err == nil {
		m.stopDeregistered[r.k] = true
	}
	m.startStopDeregistrations()
}

// stopped reports whether the stop has nothing left to do.
func (m *machine) stopped() bool { return m.stopping && len(m.stopDeregs) == 0 && m.inflight == 0 }

// abandon gives up what is in flight or still to send when StopTimeout
// ran out.
func (m *machine) abandon() {
	if m.inflight > 0 || len(m.stopDeregs) > 0 {
		m.warn("stopping: abandoning exchanges", "in_flight", m.inflight, "deregistrations_not_sent", len(m.stopDeregs))
	}
	m.stopDeregs, m.inflight = nil, 0
}
