package agent

import (
	"context"
	"errors"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
)

// Addresses, each on its own (RFC 9686 §4.2–§4.7): which are registered,
// when a lifetime change calls for a refresh, what an exchange's end means,
// and the deregistration owed to one that leaves.

// eligible reports whether ad on ifc may be registered, the RA condition
// aside (raAllows: a lapse pauses an address, it does not make it
// ineligible).
func (m *machine) eligible(ifc *iface, ad *addr) bool {
	return m.cfg.Enable && ifc.up && ifc.disc.state() == IfSupported && ad.cur.Registrable &&
		!(m.cfg.SkipTemporary && ad.cur.Class == netmon.ClassTemporary)
}

func (m *machine) registerAll(ifc *iface) {
	for _, ad := range ifc.addrs {
		if ad.phase() == Pending || ad.phase() == Failed {
			m.consider(ifc, ad)
		}
	}
}

// quiesce stops all work on an address: no refresh due, no exchange in
// flight (a queued key finds nothing to do); the address will be
// registered afresh when eligible. With forget, so is what the server may
// hold from us; without (leaving a link the address stays on: re-discovery),
// it is kept, for the state file and for the deregistration owed if the
// address goes before it is registered again.
func (m *machine) quiesce(ifc *iface, ad *addr, forget bool) {
	m.deadlines.Remove(key{ifc.index, ad.cur.IP})
	if ad.inFlight() {
		m.emit(effCancel{ad.gen})
		ad.hold.transmitted() // its INFORM may be out: its result is now stale
	}
	ad.gen = m.nextGen()
	if forget {
		ad.hold = serverHold{}
	}
	ad.last, ad.run, ad.failures = notRegistered, idle, 0
}

func (m *machine) handleAddr(na netmon.Addr) {
	ifc, ok := m.ifaces[na.Index]
	if !ok {
		ifc = m.ifaceOf(netmon.Link{Index: na.Index, Name: na.Ifname})
	}
	// An interface left alone (not wanted) is never up for the machine:
	// its addresses are only recorded, for when it is renamed into the set.
	k := key{ifc.index, na.IP}
	ad, known := ifc.addrs[na.IP]
	if !known {
		ad = &addr{gen: m.nextGen()}
		ifc.addrs[na.IP] = ad
		if sa, owed := m.deregDue[k]; owed {
			// Back before its deregistration went out: it never left,
			// and the server still holds it.
			ad.hold.transmitted()
			ad.limit.inherit(sa, m.now)
			delete(m.deregDue, k)
			m.deadlines.Remove(k) // a deregistration's retry
			m.info("address re-added: deregistration cancelled", "iface", ifc.name, "addr", na.IP)
		}
	}
	prev := ad.cur
	ad.cur = na
	at := na.Observed
	if at.IsZero() {
		at = m.now
	}
	ad.limit.extend(at, na.Valid)
	if !m.wanted(ifc.name) {
		return
	}
	if !na.Registrable {
		if known && prev.Registrable {
			// Tentative again, DAD-failed, now excluded: stop, but send no
			// deregistration for an address that is still assigned (a
			// DAD-failed one belongs to another node).
			m.info("address no longer registrable", "iface", ifc.name, "addr", na.IP, "class", na.Class, "state", na.State)
			m.quiesce(ifc, ad, true)
		}
		return
	}
	if !known || !prev.Registrable {
		m.debug("address eligible", "iface", ifc.name, "addr", na.IP, "class", na.Class)
	}
	m.consider(ifc, ad)
}

// consider decides what an address needs after a trigger: a first
// registration, a refresh (RFC 9686 §4.6 lifetime change), or nothing.
func (m *machine) consider(ifc *iface, ad *addr) {
	if !m.eligible(ifc, ad) {
		return
	}
	k := key{ifc.index, ad.cur.IP}
	switch ad.phase() {
	case Pending:
		m.queue.push(k)
	case Registering:
		ad.run = exchangingRecheck
	case Failed:
		// Its retry is scheduled (retry.go) and will carry the current
		// lifetimes: a lifetime change must not bring it forward.
	case Registered:
		if ad.toldName != m.fqdn {
			// The host was renamed since (hostNameChanged): the server
			// must hear the new name, a new exchange now.
			m.queue.push(k)
			return
		}
		// The event may have waited in netmon's queue: count the
		// lifetime down to now before comparing.
		valid := ad.cur.Valid
		if !ad.cur.Observed.IsZero() {
			_, valid = ad.cur.Remaining(m.now)
		}
		at, refresh := m.cfg.Policy.LifetimeChanged(ad.reg, m.now, valid, static(ad.cur))
		if !refresh {
			return
		}
		if cur, ok := m.deadlines.When(k); ok && !cur.After(at) {
			return // an earlier refresh is already due
		}
		m.debug("lifetime changed: refresh scheduled", "iface", ifc.name, "addr", k.addr,
			"valid", valid, "told_server", ad.reg.Valid, "at", at)
		m.deadlines.Set(k, at)
	}
}

func (m *machine) handleAddrRemoved(na netmon.Addr) {
	ifc, ok := m.ifaces[na.Index]
	if !ok {
		return
	}
	ad, ok := ifc.addrs[na.IP]
	if !ok {
		return
	}
	held := ad.held()
	sa := m.savedOf(ifc, na.IP, ad)
	m.info("address removed", "iface", ifc.name, "addr", na.IP)
	m.quiesce(ifc, ad, true)
	delete(ifc.addrs, na.IP)
	if !held || !m.cfg.Deregister || !m.cfg.Enable || !m.wanted(ifc.name) {
		return
	}
	if !ifc.up {
		// Removed while its link is down (an admin down flushes every
		// address: networkctl down, ip link set down): nothing can be
		// sent now. Owed once the link is back (waitForLink).
		m.waitForLink(ifc, sa)
		return
	}
	k := key{ifc.index, na.IP}
	m.deregDue[k] = sa
	m.queue.push(k)
}

// handleDue queues the addresses whose refresh, retry or deregistration
// retry came due.
func (m *machine) handleDue(keys []key) {
	seen := map[key]bool{}
	for _, k := range keys {
		if seen[k] {
			continue
		}
		seen[k] = true
		m.queue.push(k)
		// RFC 9686 §4.6 (MAY): refresh the interface's other addresses due
		// within the coalescing window along with this one.
		if m.cfg.Policy.Coalesce > 0 {
			// Only refreshes coalesce: a failed address keeps its backoff.
			for _, o := range m.deadlines.DueWithin(m.now, m.cfg.Policy.Coalesce, func(o key) bool { return o.ifindex == k.ifindex && m.registered(o) }) {
				if !seen[o] {
					seen[o] = true
					m.queue.push(o)
				}
			}
		}
	}
}

// clockJumped: after a suspend the server has counted its bindings down
// in real time while our timers (monotonic) stood still: refresh every
// registration, paced like any burst.
func (m *machine) clockJumped() {
	n := 0
	for _, ifc := range m.ifaces {
		for ip, ad := range ifc.addrs {
			if ad.phase() == Registered || ad.phase() == Failed {
				m.queue.push(key{ifc.index, ip})
				n++
			}
		}
	}
	m.info("clock jumped (suspend/resume or time set): refreshing registrations", "addresses", n)
}

// hostNameChanged: the name to send is now name (the host was renamed).
// Every registered address is registered again with it, now, through the
// pacing queue (consider sees its old name); one being registered is
// looked at again when its exchange ends (exchangingRecheck). Pending and failed ones
// carry the new name when their exchange starts.
func (m *machine) hostNameChanged(name string) {
	if name == m.fqdn {
		return
	}
	old := m.fqdn
	m.fqdn = name
	n := 0
	for _, ifc := range m.sortedIfaces() {
		for _, ip := range sortedAddrs(ifc) {
			if ad := ifc.addrs[ip]; (ad.phase() == Registered || ad.phase() == Registering) && m.eligible(ifc, ad) {
				m.consider(ifc, ad)
				n++
			}
		}
	}
	m.info("host name changed: registering again", "old", old, "new", name, "addresses", n)
}

// registered reports whether k's address is registered (its deadline is a
// refresh, not a retry).
func (m *machine) registered(k key) bool {
	ifc, ok := m.ifaces[k.ifindex]
	if !ok {
		return false
	}
	ad, ok := ifc.addrs[k.addr]
	return ok && ad.phase() == Registered
}

func (m *machine) startRegistration(k key) {
	ifc := m.ifaces[k.ifindex]
	ad := ifc.addrs[k.addr]
	m.deadlines.Remove(k)
	ad.last, ad.run, ad.gen, ad.sendingName = notRegistered, exchanging, m.nextGen(), m.fqdn
	m.inflight++
	m.counters.Registrations++
	m.emit(effExchange{k: k, gen: ad.gen, ifname: ifc.name, last: ad.cur, fqdn: m.fqdn})
}

func (m *machine) handleResult(r exchangeResult) {
	m.inflight--
	m.logResult(r)
	m.noteResult(r)
	if m.fatalError(r.err) {
		return
	}
	if r.dereg {
		d := m.deregInFlight[r.k]
		if d.count--; d.count <= 0 {
			delete(m.deregInFlight, r.k)
			m.afterDeregistration(r.k)
		} else {
			m.deregInFlight[r.k] = d
		}
		_, linked := m.ifaces[r.k.ifindex]
		switch {
		case r.err != nil && !errors.Is(r.err, context.Canceled):
			m.retryDeregistration(r.k, d.rec)
		case r.err == nil && !linked:
			m.stale.remove(d.rec) // out before its link was removed (linkGone)
		}
		// Not forgotten: the address may have been re-added and be
		// registered again by the time this arrives; an address that
		// stays gone is out of the snapshot already (not owed, not
		// assigned). Only the stop forgets.
		return
	}
	ifc, ok := m.ifaces[r.k.ifindex]
	if !ok {
		return
	}
	ad, ok := ifc.addrs[r.k.addr]
	if !ok || ad.gen != r.gen {
		return // forgotten or superseded while in flight
	}
	recheck := ad.run == exchangingRecheck
	ad.run = idle
	if r.res.Sends > 0 {
		ad.hold.transmitted()
	}
	switch {
	case errors.Is(r.err, context.Canceled):
		ad.last = notRegistered
	case errors.Is(r.err, registrar.ErrAddressGone):
		// The lookup at a transmission did not find the address (or found
		// it not registrable). If it really left, netmon's event quiesces
		// it; if that was a blip netmon coalesced away, no event follows,
		// so it must not sit pending with nothing due: retry like a
		// failure.
		ad.last = failed
		m.scheduleRetry(ifc, ad)
	case r.err == nil && r.res.Replied:
		ad.last, ad.failures, ad.toldName = registered, 0, ad.sendingName
		ad.hold.confirmed(r.res.Preferred)
		// The server counts the lifetimes from when the last
		// transmission carried them.
		at := r.res.LastSent
		if at.IsZero() {
			at = m.now
		}
		ad.reg = m.cfg.Policy.Registered(at, r.res.Valid, static(ad.cur))
		ad.limit.extend(at, r.res.Valid)
		if ad.reg.Periodic() {
			m.deadlines.Set(r.k, ad.reg.Next)
		}
	default:
		// No valid reply (or every send refused): what the server holds,
		// if anything, is unknown; ad.reg keeps the last confirmed.
		ad.last = failed
		m.scheduleRetry(ifc, ad)
	}
	if recheck {
		m.consider(ifc, ad)
	}
}

// afterDeregistration registers an address re-added while its
// deregistration was in flight (next held it back).
func (m *machine) afterDeregistration(k key) {
	if ifc, ok := m.ifaces[k.ifindex]; ok {
		if ad, ok := ifc.addrs[k.addr]; ok && ad.phase() == Pending {
			m.consider(ifc, ad)
		}
	}
}

func (m *machine) logResult(r exchangeResult) {
	attrs := []any{"iface", r.k.ifindex, "addr", r.k.addr, "sends", r.res.Sends}
	if ifc, ok := m.ifaces[r.k.ifindex]; ok {
		attrs[1] = ifc.name
	}
	switch {
	case r.dereg && r.err != nil:
		m.warn("deregistration not sent", append(attrs, "err", r.err)...)
	case r.dereg && r.res.Replied:
		m.info("deregistered", attrs...)
	case r.dereg:
		m.info("deregistration sent", attrs...)
	case r.err == nil && r.res.Replied:
		m.info("registered", append(attrs, "preferred", r.res.Preferred, "valid", r.res.Valid, "took", r.res.Duration)...)
	case errors.Is(r.err, context.Canceled):
		m.debug("exchange abandoned", attrs...)
	default:
		m.warn("registration failed", append(attrs, "err", r.err)...)
	}
}
