package agent

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/addrreg/addrreg/netmon"
)

// Discovery, per link (RFC 9686 §4.1): whether a server on the link wants
// registrations, asked from a DAD-complete link-local address afresh at
// every (re)connection, and the RA condition that gates registration.

// Re-discovery (RFC 8415 §18.2.6 spirit): a link without registration
// support is asked again after the default Information Refresh Time, so a
// server that starts offering option 148 is noticed without a link flap. A
// probe that failed is tried again after Config.Retry's backoff.
const reprobeUnsupported = 24 * time.Hour // IRT_DEFAULT, RFC 8415 §21.23

func (m *machine) handleEvent(ev netmon.Event) {
	switch ev.Kind {
	case netmon.LinkAdded, netmon.LinkUpdated, netmon.LinkRenamed, netmon.LinkChanged, netmon.RAFlags:
		m.handleLink(ev)
	case netmon.LinkRemoved:
		if ifc, ok := m.ifaces[ev.Link.Index]; ok {
			m.info("interface removed", "iface", ifc.name)
			m.linkGone(ifc)
			m.leaveLink(ifc, false)
			delete(m.ifaces, ev.Link.Index)
		}
	case netmon.AddrAdded, netmon.AddrUpdated:
		if ev.Addr.Class == netmon.ClassLinkLocal {
			m.handleLinkLocal(ev.Addr) // discovery's source
		} else {
			m.handleAddr(ev.Addr)
		}
	case netmon.AddrRemoved:
		if ifc, ok := m.ifaces[ev.Addr.Index]; ok && (ev.Addr.Class == netmon.ClassLinkLocal || ifc.linkLocals[ev.Addr.IP]) {
			m.linkLocalRemoved(ifc, ev.Addr.IP)
		} else {
			m.handleAddrRemoved(ev.Addr)
		}
	case netmon.ClockJump:
		m.clockJumped()
	}
}

func (m *machine) handleLink(ev netmon.Event) {
	l := ev.Link
	ifc := m.ifaceOf(l)
	if l.Name != "" && ifc.name != l.Name {
		if ifc.name != "" {
			m.info("interface renamed", "iface", l.Name, "old", ifc.name)
		}
		ifc.name = l.Name
	}
	if hw := l.HardwareAddr.String(); hw != "" {
		ifc.hw = hw
	}
	if m.stale.takeReplug(ifc.name) {
		// Re-created under a removed link's name (a replug; ip link add
		// names a veth before it is renamed): its addresses get
		// relinkGrace to come back, as after a link down.
		ifc.relinked = true
	}
	if !m.wanted(ifc.name) {
		// Left alone, but its addresses stay known: netmon does not report
		// them again if it is renamed back. Coming back is a connection.
		if ifc.up || ifc.disc.state() != IfUnknown {
			m.leaveLink(ifc, true)
		}
		ifc.up = false
		return
	}
	up := l.Up && l.LowerUp
	wasUp := ifc.up
	ifc.up = up
	switch {
	case !up && wasUp:
		m.info("interface down", "iface", ifc.name)
		m.leaveLink(ifc, true)
		ifc.disc.known, ifc.relinked = linkDown, true
		m.dueWaitForLink(ifc)
		return
	case !up:
		ifc.disc.known, ifc.relinked = linkDown, true
		return
	case !wasUp || ev.Kind == netmon.LinkChanged:
		// RFC 9686 §4.1: discover afresh on every (re)connection, with no
		// cached knowledge of the link.
		if wasUp {
			m.leaveLink(ifc, true)
		}
		ifc.raMO = false
	}
	m.raFlags(ifc, l.Managed || l.Other, l)
	// A failed probe's retry keeps its backoff: link events (an RA
	// changing the flags) do not bring it forward.
	if st := ifc.disc.state(); st == IfDown || (st == IfUnknown && ifc.disc.next.IsZero()) {
		m.startProbe(ifc)
	}
	m.registerAll(ifc)
}

// raFlags follows the link's RA condition: M or O in effect (netmon keeps
// a router's flags while its Router Lifetime lasts).
//
// With RequireRAFlags, registrations and refreshes start only while it
// holds (RFC 9686 §4.1: the client SHOULD NOT send ADDR-REG-INFORM unless
// an RA with M or O has been received). When it lapses (the router's
// lifetime ran out, or it withdrew itself) nothing new starts, but nothing
// is deregistered either: RFC 9686 §4.7 deregisters an address that is
// removed, expires, or leaves the link, and a lapsed RA is none of these —
// the addresses stay assigned and in use, and the server's bindings run
// out at the lifetimes it was told. A refresh or retry that comes due
// meanwhile is held (pausedForRA) and runs when the condition is back.
func (m *machine) raFlags(ifc *iface, mo bool, l netmon.Link) {
	if mo == ifc.raMO {
		return
	}
	ifc.raMO = mo
	if mo {
		m.info("RA with M or O flag seen", "iface", ifc.name, "managed", l.Managed, "other", l.Other)
		for ip, ad := range ifc.addrs {
			if ad.run == pausedForRA {
				ad.run = idle
				m.queue.push(key{ifc.index, ip})
			}
		}
		return
	}
	if m.cfg.RequireRAFlags && ifc.up {
		m.info("RA with M or O flag lapsed: starting no registration or refresh until one is seen again; registrations kept", "iface", ifc.name)
	}
}

// leaveLink forgets what was learnt about the link: support is unknown and
// every address must be registered again once it is re-discovered. With
// keepAddrs the addresses stay known (pending), with what the server may
// hold from them.
func (m *machine) leaveLink(ifc *iface, keepAddrs bool) {
	m.stopDiscovery(ifc)
	ifc.disc.known, ifc.disc.failures = supportUnknown, 0 // its backoff too
	for ip, ad := range ifc.addrs {
		m.quiesce(ifc, ad, !keepAddrs)
		if !keepAddrs {
			delete(ifc.addrs, ip)
		}
	}
}

// stopDiscovery cancels a running probe and a pending re-probe.
func (m *machine) stopDiscovery(ifc *iface) {
	if p := ifc.disc.running; p != nil {
		m.emit(effCancel{p.gen})
		ifc.disc.running = nil
	}
	ifc.disc.next = time.Time{}
}

func (m *machine) startProbe(ifc *iface) {
	if !m.cfg.Enable || !ifc.up || m.stopping {
		return
	}
	m.stopDiscovery(ifc)
	if !ifc.linkLocal.IsValid() {
		// Waiting for a DAD-complete link-local address: its arrival probes.
		ifc.disc.known = supportUnknown
		return
	}
	// Asked afresh: what a probe that ends without an answer (cancelled)
	// leaves known is nothing.
	ifc.disc.known = supportUnknown
	ifc.disc.running = &probe{gen: m.nextGen(), from: ifc.linkLocal}
	m.info("discovering registration support", "iface", ifc.name, "from", ifc.linkLocal)
	m.emit(effProbe{ifindex: ifc.index, gen: ifc.disc.running.gen, ifname: ifc.name, from: ifc.linkLocal})
}

func (m *machine) handleProbe(pr probeResult) {
	ifc, ok := m.ifaces[pr.ifindex]
	if !ok || ifc.disc.running == nil || pr.gen != ifc.disc.running.gen {
		return
	}
	ifc.disc.running = nil
	m.noteProbe(pr)
	switch {
	case pr.err != nil:
		if errors.Is(pr.err, context.Canceled) {
			return
		}
		if m.fatalError(pr.err) {
			return
		}
		ifc.disc.failures++
		d := m.cfg.Retry.Delay(ifc.disc.failures, 0, m.cfg.Rand)
		m.warn("discovery failed; trying again", "iface", ifc.name, "err", pr.err, "in", d, "failures", ifc.disc.failures)
		ifc.disc.known = supportUnknown
		ifc.disc.next = m.now.Add(d)
	case pr.supported:
		ifc.disc.failures = 0
		m.info("registration supported on link", "iface", ifc.name)
		ifc.disc.known = supported
		m.claimStale(ifc)
		m.registerAll(ifc)
	default:
		ifc.disc.failures = 0
		m.info("registration not offered on link (no option 148): registering nothing", "iface", ifc.name)
		ifc.disc.known = unsupported
		ifc.disc.next = m.now.Add(reprobeUnsupported)
	}
}

// reprobe runs discovery again when its retry is due.
func (m *machine) reprobe(ifc *iface) {
	ifc.disc.next = time.Time{}
	if !ifc.up {
		return
	}
	if st := ifc.disc.state(); st == IfUnknown || st == IfUnsupported {
		m.startProbe(ifc)
	}
}

// handleLinkLocal follows the link's DAD-complete link-local addresses,
// discovery's sources.
func (m *machine) handleLinkLocal(na netmon.Addr) {
	ifc, ok := m.ifaces[na.Index]
	if !ok {
		ifc = m.ifaceOf(netmon.Link{Index: na.Index, Name: na.Ifname})
	}
	// A tentative or DAD-failed link-local is no source for discovery.
	usable := na.State != netmon.StateTentative && na.State != netmon.StateDADFailed
	if usable != ifc.linkLocals[na.IP] {
		if usable {
			ifc.linkLocals[na.IP] = true
		} else {
			delete(ifc.linkLocals, na.IP)
		}
		m.linkLocalChanged(ifc)
	}
}

// linkLocalRemoved: a link-local address (or one the link held as such)
// left.
func (m *machine) linkLocalRemoved(ifc *iface, ip netip.Addr) {
	if ifc.linkLocals[ip] {
		delete(ifc.linkLocals, ip)
		m.linkLocalChanged(ifc)
	}
}

// linkLocalChanged picks the link-local address discovery uses and
// restarts a probe that was sent from one the interface no longer holds.
func (m *machine) linkLocalChanged(ifc *iface) {
	if !ifc.linkLocals[ifc.linkLocal] {
		ifc.linkLocal = netip.Addr{}
		for ip := range ifc.linkLocals {
			if !ifc.linkLocal.IsValid() || ip.Less(ifc.linkLocal) {
				ifc.linkLocal = ip
			}
		}
	}
	switch {
	case !ifc.up:
	case ifc.disc.running != nil && ifc.disc.running.from != ifc.linkLocal:
		m.startProbe(ifc) // from the new address, or wait for one
	case ifc.disc.state() == IfUnknown && ifc.linkLocal.IsValid() && ifc.disc.next.IsZero():
		m.startProbe(ifc)
	}
}

func (m *machine) rediscoverAll() {
	m.info("re-discovering on every interface")
	for _, ifc := range m.ifaces {
		if !ifc.up || !m.wanted(ifc.name) {
			continue
		}
		m.leaveLink(ifc, true)
		m.startProbe(ifc)
	}
}
