package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
)

// What status shows (Agent.Status, addrregd status, SIGUSR1, metrics): the
// machine's report, and the notes it keeps for it. The schema's types are
// in statusschema.go.

// ServerSource is implemented by a Registrar that remembers which server
// answered on each interface (the real one does).
type ServerSource interface {
	Server(ifindex int) (registrar.ServerInfo, bool)
}

func (m *machine) noteProbe(pr probeResult) {
	if m.counters.Probes == nil {
		m.counters.Probes = map[string]uint64{}
	}
	switch {
	case pr.err != nil && errors.Is(pr.err, context.Canceled):
	case pr.err != nil:
		m.counters.Probes["error"]++
	case pr.supported:
		m.counters.Probes["supported"]++
	default:
		m.counters.Probes["unsupported"]++
	}
}

// noteResult records an exchange's outcome for status, before handleResult
// acts on it.
func (m *machine) noteResult(r exchangeResult) {
	if r.dereg || errors.Is(r.err, context.Canceled) {
		return
	}
	if r.err == nil && r.res.Replied {
		m.counters.Replied++
	} else {
		m.counters.Failed++
	}
	ifc, ok := m.ifaces[r.k.ifindex]
	if !ok {
		return
	}
	ad, ok := ifc.addrs[r.k.addr]
	if !ok || ad.gen != r.gen {
		return
	}
	if r.res.Sends > 0 {
		ad.note.lastCarried = &Lifetimes{Preferred: wireSeconds(r.res.Preferred), Valid: wireSeconds(r.res.Valid)}
	}
	switch {
	case r.err == nil && r.res.Replied:
		ad.note.lastRegistered, ad.note.lastErr = r.res.LastSent, ""
		if ad.note.lastRegistered.IsZero() {
			ad.note.lastRegistered = m.now
		}
	case r.err != nil:
		ad.note.lastErr = r.err.Error()
	default:
		ad.note.lastErr = "no reply"
	}
}

// wireSeconds is a lifetime as the wire carries it (RFC 8415 §7.7:
// 0xffffffff is infinity).
func wireSeconds(d time.Duration) uint32 {
	if d < 0 {
		return 0
	}
	if d >= netmon.Infinite || d/time.Second >= 0xffffffff {
		return 0xffffffff
	}
	return uint32(d / time.Second)
}

// refreshReason says why ad's next refresh is scheduled.
func refreshReason(ad *addr) RefreshReason {
	switch {
	case ad.phase() == Failed:
		return ReasonRetryBackoff
	case ad.reg.Periodic():
		return ReasonStaticInterval
	}
	return ReasonLifetimeChange
}

// report builds the status; servers, if not nil, names the server that
// answered on each link. It changes nothing.
func (m *machine) report(servers ServerSource) Status {
	s := Status{Queued: m.queue.len(), InFlight: m.inflight, Counters: m.counters, FQDN: m.fqdn}
	s.Counters.Probes = map[string]uint64{"supported": 0, "unsupported": 0, "error": 0}
	for k, v := range m.counters.Probes {
		s.Counters.Probes[k] = v
	}
	for _, ifc := range m.ifaces {
		if !m.wanted(ifc.name) {
			continue
		}
		is := IfaceStatus{Name: ifc.name, Index: ifc.index, State: ifc.disc.state(), SeenMO: ifc.raMO,
			Addresses: make([]AddrStatus, 0, len(ifc.addrs))}
		is.NextProbe = ifc.disc.next
		if servers != nil && ifc.disc.state() == IfSupported {
			if si, ok := servers.Server(ifc.index); ok {
				is.Server = &ServerStatus{Address: si.Addr, DUID: si.DUID, Answered: si.At}
			}
		}
		for ip, ad := range ifc.addrs {
			as := AddrStatus{Addr: ip, Kind: KindOf(ad.cur.Class), Phase: ad.phase(),
				LastRegistered: ad.note.lastRegistered, Told: ad.note.lastCarried, LastError: ad.note.lastErr}
			if at, ok := m.deadlines.When(key{ifc.index, ip}); ok {
				as.NextRefresh, as.RefreshReason = at, refreshReason(ad)
			}
			is.Addresses = append(is.Addresses, as)
		}
		for k := range m.deregDue {
			if k.ifindex == ifc.index {
				as := AddrStatus{Addr: k.addr, Phase: Deregistering}
				as.NextRefresh, _ = m.deadlines.When(k) // a retry, or the end of relinkGrace
				is.Addresses = append(is.Addresses, as)
			}
		}
		// Removed while the link was down (or gone since the last run):
		// waiting for the link and discovery (claimStale).
		for _, sa := range m.stale.of(ifc.name) {
			if _, there := ifc.addrs[sa.Addr]; !there {
				is.Addresses = append(is.Addresses, AddrStatus{Addr: sa.Addr, Phase: Deregistering})
			}
		}
		slices.SortFunc(is.Addresses, func(x, y AddrStatus) int { return x.Addr.Compare(y.Addr) })
		s.Interfaces = append(s.Interfaces, is)
	}
	// No link of that name now (removed, or not seen since the start):
	// its deregistrations wait for one (linkGone), or for their bindings
	// to run out (dropStale).
	for name, list := range m.stale.byIface {
		if !m.wanted(name) || slices.ContainsFunc(s.Interfaces, func(is IfaceStatus) bool { return is.Name == name }) {
			continue
		}
		is := IfaceStatus{Name: name, State: IfDown, Addresses: make([]AddrStatus, 0, len(list))}
		for _, sa := range list {
			is.Addresses = append(is.Addresses, AddrStatus{Addr: sa.Addr, Phase: Deregistering})
		}
		slices.SortFunc(is.Addresses, func(x, y AddrStatus) int { return x.Addr.Compare(y.Addr) })
		s.Interfaces = append(s.Interfaces, is)
	}
	slices.SortFunc(s.Interfaces, func(x, y IfaceStatus) int { return strings.Compare(x.Name, y.Name) })
	if s.Interfaces == nil {
		s.Interfaces = []IfaceStatus{}
	}
	return s
}
