package agent

import "time"

// Departures (RFC 9686 §4.7): the deregistration owed to an address that
// left its link. It is due at once (deregDue, queued) on a link that is up;
// it waits for its link (stale.go) while the link is down or removed, and
// is claimed when discovery finds support there again (claimStale), after
// relinkGrace for a link that was down; one that was not sent is retried;
// re-adding the address cancels it (handleAddr).

// linkGone keeps what the server may hold on a link that was removed (a
// USB NIC unplugged, ip link del, a VM NIC hot-unplugged): its addresses
// went with it, and nothing can be sent on it any more, but their
// bindings stay on the server. So, exactly as for a link that went down,
// each address the server may hold is owed a deregistration (RFC 9686
// §4.7) that waits in stale, by the link's name and hardware address: in
// the state file (a restart keeps it), claimed when a link of that name
// appears and discovery finds support (claimStale, after relinkGrace:
// one re-added meanwhile is only registered again), or dropped once the
// binding has run out (dropStale).
//
// The name, not the hardware address, finds the link again: stale and
// --interface/--exclude are by name, and udev's persistent names
// (enx<MAC>, by path) and ip link add give a re-created link its name
// back; claimStale still checks the hardware address (a different NIC
// under the same name deregisters nothing), as after a restart.
func (m *machine) linkGone(ifc *iface) {
	if !m.cfg.Deregister || !m.cfg.Enable || !m.wanted(ifc.name) {
		return
	}
	for ip, ad := range ifc.addrs {
		if ad.held() {
			m.waitForLink(ifc, m.savedOf(ifc, ip, ad))
		}
	}
	m.dueWaitForLink(ifc)
	// In flight: it may not get out (stale.remove forgets it if it did).
	for k, d := range m.deregInFlight {
		if k.ifindex == ifc.index {
			m.waitForLink(ifc, d.rec)
		}
	}
	m.stale.linkRemoved(ifc.name) // with those that left while it was down
}

// dueWaitForLink: ifc went down or away, so the deregistrations due on it
// wait for it to be back (waitForLink).
func (m *machine) dueWaitForLink(ifc *iface) {
	for k, sa := range m.deregDue {
		if k.ifindex == ifc.index {
			delete(m.deregDue, k)
			m.deadlines.Remove(k)
			m.waitForLink(ifc, sa)
		}
	}
}

// startDeregistration sends k's deregistration: the one due, or, with
// DeregisterOnStop, one for an address still assigned. noWait: send once,
// wait for no reply (a removed address cannot get one; the stop cannot
// wait).
func (m *machine) startDeregistration(k key, noWait bool) {
	d := m.deregInFlight[k]
	var ok bool
	if d.rec, ok = m.deregDue[k]; !ok { // DeregisterOnStop: one still assigned
		ifc := m.ifaces[k.ifindex]
		d.rec = m.savedOf(ifc, k.addr, ifc.addrs[k.addr])
	}
	d.count++
	m.deregInFlight[k] = d
	delete(m.deregDue, k)
	m.deadlines.Remove(k)
	m.inflight++
	m.counters.Deregistrations++
	m.emit(effExchange{k: k, gen: m.nextGen(), ifname: m.ifname(k.ifindex), dereg: true, noWait: noWait, fqdn: m.fqdn})
}

// retryDeregistration owes k's deregistration again after one that was
// not sent (its one transmission refused: RFC 9686 §4.7 sends it once, as
// no reply can reach a removed address). It goes out after Retry.First,
// once per delay, until it is sent, the address comes back or its link
// goes; without this the server would keep the binding until it expires.
// While the link is down it waits for the link to be back (waitForLink),
// not for a delay.
func (m *machine) retryDeregistration(k key, sa savedAddr) {
	ifc, ok := m.ifaces[k.ifindex]
	if !ok {
		return // removed meanwhile: it waits in stale (linkGone)
	}
	if _, owed := m.deregDue[k]; owed {
		return
	}
	if ad, back := ifc.addrs[k.addr]; back {
		ad.hold.transmitted() // back meanwhile: the server still holds it
		ad.limit.inherit(sa, m.now)
		return
	}
	if !ifc.up {
		m.waitForLink(ifc, sa)
		return
	}
	m.deregDue[k] = sa
	d := m.cfg.Retry.Delay(1, 0, m.cfg.Rand)
	m.deadlines.Set(k, m.now.Add(d))
	m.debug("deregistration retry scheduled", "iface", ifc.name, "addr", k.addr, "in", d)
}

// claimStale handles the file's addresses on ifc once discovery shows its
// link supports registration: those no longer on the interface are owed a
// deregistration; those still there are registered like any other.
func (m *machine) claimStale(ifc *iface) {
	list, ok := m.stale.take(ifc.name)
	if !ok {
		return
	}
	n := 0
	for _, sa := range list {
		if sa.HW != "" && ifc.hw != "" && sa.HW != ifc.hw {
			m.info("state file: address was registered on another link under this name: not deregistering",
				"iface", ifc.name, "addr", sa.Addr, "hwaddr", sa.HW, "now", ifc.hw)
			continue
		}
		if ad, ok := ifc.addrs[sa.Addr]; ok {
			// Still there: registered like any other, and until then the
			// server holds it from the last run.
			ad.hold.transmitted()
			ad.limit.inherit(sa, m.now)
			continue
		}
		if !m.cfg.Deregister || !m.cfg.Enable {
			continue
		}
		k := key{ifc.index, sa.Addr}
		sa.Iface, sa.HW = ifc.name, ifc.hw
		m.deregDue[k] = sa
		n++
		if ifc.relinked {
			// The link is back: give the addresses time to come back
			// (relinkGrace); one re-added meanwhile cancels its
			// deregistration (handleAddr), the others go when it is due.
			m.deadlines.Set(k, m.now.Add(relinkGrace))
			m.info("address gone while the link was down or removed: deregistering unless it comes back", "iface", ifc.name, "addr", sa.Addr, "in", relinkGrace)
			continue
		}
		m.queue.push(k)
		m.info("address registered before the restart is gone: deregistering", "iface", ifc.name, "addr", sa.Addr)
	}
	if n > 0 {
		m.info("state file: deregistering addresses gone since the last run or while the link was down", "iface", ifc.name, "addresses", n)
	}
}

// relinkGrace is how long, after a link that was down is back and
// discovery found registration support, an address that left while it
// was down may take to come back before it is deregistered. An admin down
// flushes the link's addresses; SLAAC (the kernel's, systemd-networkd's,
// NetworkManager's) adds them again after the first RA, which a host
// solicits up to MAX_RTR_SOLICITATIONS (3) times RTR_SOLICITATION_INTERVAL
// (4 s) apart (RFC 4861 §10): up to ~12 s, plus DAD. Stable-privacy and
// EUI-64 addresses come back the same; a temporary address (RFC 8981)
// comes back as a new one, and the old one is deregistered (RFC 9686 §4.7).
const relinkGrace = 15 * time.Second

// waitForLink keeps the deregistration owed for an address that left
// while its link is down, with the state file's stale addresses: in the
// snapshot (a restart loses nothing), claimed when the link is back and
// discovery finds support (claimStale), after relinkGrace. If the link
// never comes back it stays owed, and the server's binding runs out at
// its valid lifetime.
func (m *machine) waitForLink(ifc *iface, sa savedAddr) {
	sa.Iface, sa.HW = ifc.name, ifc.hw
	if !m.stale.add(sa) {
		return
	}
	m.info("deregistration waits for the link", "iface", ifc.name, "addr", sa.Addr)
}

// dropStale forgets the stale addresses whose binding has surely run out
// on the server by now (RFC 9686 §4.3: it keeps a binding for the valid
// lifetime told): a deregistration owed for it has nothing left to
// remove. This bounds what waits for a link that never returns (a NIC
// unplugged for good, a name now excluded by --interface or --exclude).
func (m *machine) dropStale() {
	for _, sa := range m.stale.dropExpired(m.now) {
		at, _ := sa.expires()
		m.info("state file: dropping a deregistration that waited for its link: the server's binding has run out",
			"iface", sa.Iface, "addr", sa.Addr, "hwaddr", sa.HW, "expired", at)
	}
}
