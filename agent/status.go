package agent

import (
	"context"
	"encoding/hex"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
)

// Status is a snapshot of the agent's state: what `addrregd status`
// prints, SIGUSR1 logs and the metrics export. Its JSON form is the stable
// schema documented in doc/status.md; enums marshal as their names.
type Status struct {
	Interfaces []IfaceStatus `json:"interfaces"`
	// Queued is the length of the pacing queue (exchanges waiting for
	// --rate/--burst or the in-flight bound); InFlight the exchanges running.
	Queued   int      `json:"queued"`
	InFlight int      `json:"in_flight"`
	Counters Counters `json:"counters"`
	// FQDN is the name registrations carry in their Client FQDN option
	// (the host's, followed as it changes, or --fqdn); empty: none.
	FQDN string `json:"fqdn,omitempty"`
}

// Counters count the agent's exchanges and probes since it started.
type Counters struct {
	Registrations   uint64 `json:"registrations_started"`   // ADDR-REG-INFORM exchanges started (refreshes included)
	Deregistrations uint64 `json:"deregistrations_started"` // zero-lifetime exchanges started
	Replied         uint64 `json:"registrations_replied"`   // exchanges that ended with an ADDR-REG-REPLY
	Failed          uint64 `json:"registrations_failed"`    // exchanges that ended without one (not abandoned)
	// Probes by outcome: "supported", "unsupported" (a Reply without
	// option 148), "error".
	Probes map[string]uint64 `json:"probes"`
}

// IfaceStatus is one interface's state.
type IfaceStatus struct {
	Name string `json:"name"`
	// Index is the link's ifindex; 0 when there is no link of that name
	// now (removed: a NIC unplugged): then State is down, and Addresses
	// lists the deregistrations waiting for a link of that name.
	Index int     `json:"index"`
	State IfState `json:"state"`
	// SeenMO: an RA with M or O is in effect on the link (seen since it
	// came up, its router's lifetime not over): with --require-ra-flags,
	// registrations and refreshes start only while it is.
	SeenMO bool `json:"ra_managed_or_other"`
	// Server is the registration server that answered discovery or a
	// registration on this link, when the registrar can tell.
	Server *ServerStatus `json:"server,omitempty"`
	// NextProbe is when discovery runs again (after an error, or 24 h after
	// a link without registration); zero when none is scheduled.
	NextProbe time.Time    `json:"next_probe,omitzero"`
	Addresses []AddrStatus `json:"addresses"`
}

// ServerStatus is the server that last answered on a link.
type ServerStatus struct {
	Address  netip.Addr `json:"address"`
	DUID     HexBytes   `json:"duid"`
	Answered time.Time  `json:"answered"`
}

// AddrStatus is one address's state.
type AddrStatus struct {
	Addr  netip.Addr `json:"address"`
	Kind  Kind       `json:"kind"`
	Phase Phase      `json:"phase"`
	// LastRegistered is when the server last acknowledged it (the last
	// transmission of the exchange that got the reply).
	LastRegistered time.Time `json:"last_registered,omitzero"`
	// Told is what the last exchange's last transmission carried.
	Told *Lifetimes `json:"told,omitempty"`
	// NextRefresh is when the next exchange is due; zero when none is
	// scheduled (a SLAAC address refreshes when its lifetimes change).
	NextRefresh   time.Time     `json:"next_refresh,omitzero"`
	RefreshReason RefreshReason `json:"refresh_reason,omitempty"`
	LastError     string        `json:"last_error,omitempty"`
}

// Lifetimes in whole seconds, as on the wire: 4294967295 is infinite.
type Lifetimes struct {
	Preferred uint32 `json:"preferred"`
	Valid     uint32 `json:"valid"`
}

// HexBytes marshals as lower-case hex.
type HexBytes []byte

// MarshalText implements encoding.TextMarshaler.
func (h HexBytes) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *HexBytes) UnmarshalText(b []byte) error {
	d, err := hex.DecodeString(string(b))
	*h = d
	return err
}

// Kind is what sort of address the status reports: the operator
// words for netmon's classes.
type Kind string

// Address kinds.
const (
	KindStable    Kind = "stable"    // SLAAC, EUI-64 or RFC 7217 stable-privacy
	KindTemporary Kind = "temporary" // RFC 8981
	KindStatic    Kind = "static"    // configured, or infinite valid lifetime
	KindULA       Kind = "ula"       // RFC 4193
)

// KindOf maps a netmon class to a Kind; classes never registered keep
// their netmon name.
func KindOf(c netmon.Class) Kind {
	switch c {
	case netmon.ClassGlobal, netmon.ClassStablePrivacy:
		return KindStable
	case netmon.ClassTemporary:
		return KindTemporary
	case netmon.ClassStatic:
		return KindStatic
	case netmon.ClassULA:
		return KindULA
	}
	return Kind(c.String())
}

// RefreshReason says why the next refresh is scheduled.
type RefreshReason string

// Refresh reasons.
const (
	// ReasonLifetimeChange: the kernel's valid lifetime moved by more than
	// the tolerance against what the server was told (RFC 9686 §4.6).
	ReasonLifetimeChange RefreshReason = "lifetime_change"
	// ReasonStaticInterval: a static or infinite-lifetime address refreshes
	// every --static-refresh.
	ReasonStaticInterval RefreshReason = "static_interval"
	// ReasonRetryBackoff: the last exchange failed and is tried again.
	ReasonRetryBackoff RefreshReason = "retry_backoff"
)

// MarshalText implements encoding.TextMarshaler: the name, for any value.
func (s IfState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *IfState) UnmarshalText(b []byte) error {
	i, err := parseEnum(ifStateNames[:], string(b), "state")
	*s = IfState(i)
	return err
}

// MarshalText implements encoding.TextMarshaler: the name, for any value.
func (p Phase) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Phase) UnmarshalText(b []byte) error {
	i, err := parseEnum(phaseNames[:], string(b), "phase")
	*p = Phase(i)
	return err
}

func parseEnum(names []string, s, what string) (int, error) {
	if i := slices.Index(names, s); i >= 0 {
		return i, nil
	}
	return 0, errors.New("unknown " + what + " " + strconv.Quote(s) + ": want one of " + strings.Join(names, ", "))
}

// ServerSource is implemented by a Registrar that remembers which server
// answered on each interface (the real one does).
type ServerSource interface {
	Server(ifindex int) (registrar.ServerInfo, bool)
}

// Status returns a snapshot of the state; ctx bounds the wait for the
// owner goroutine, which builds it between two events.
func (a *Agent) Status(ctx context.Context) (Status, error) {
	c := make(chan Status, 1)
	select {
	case a.statusReq <- c:
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
	select {
	case s := <-c:
		return s, nil
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
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
		ad.note.told = &Lifetimes{Preferred: wireSeconds(r.res.Preferred), Valid: wireSeconds(r.res.Valid)}
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
	s := Status{Queued: len(m.queue), InFlight: m.inflight, Counters: m.counters, FQDN: m.fqdn}
	s.Counters.Probes = map[string]uint64{"supported": 0, "unsupported": 0, "error": 0}
	for k, v := range m.counters.Probes {
		s.Counters.Probes[k] = v
	}
	for _, ifc := range m.ifaces {
		if !m.wanted(ifc.name) {
			continue
		}
		is := IfaceStatus{Name: ifc.name, Index: ifc.index, State: ifc.disc.state(), SeenMO: ifc.mo,
			Addresses: make([]AddrStatus, 0, len(ifc.addrs))}
		is.NextProbe = ifc.disc.next
		if servers != nil && ifc.disc.state() == IfSupported {
			if si, ok := servers.Server(ifc.index); ok {
				is.Server = &ServerStatus{Address: si.Addr, DUID: si.DUID, Answered: si.At}
			}
		}
		for ip, ad := range ifc.addrs {
			as := AddrStatus{Addr: ip, Kind: KindOf(ad.cur.Class), Phase: ad.phase(),
				LastRegistered: ad.note.lastRegistered, Told: ad.note.told, LastError: ad.note.lastErr}
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
