package agent

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/addrreg/addrreg/netmon"
)

// The status schema (doc/status.md): what Agent.Status returns and
// addrregd status prints, and the one-line Summary the heartbeat carries.
// Enums marshal as their names.

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

// IfState is an interface's discovery state.
type IfState int

// Interface states.
const (
	IfUnknown IfState = iota
	IfDown
	IfProbing
	IfSupported
	IfUnsupported
)

var ifStateNames = [...]string{"unknown", "down", "probing", "supported", "unsupported"}

func (s IfState) String() string {
	if s >= 0 && int(s) < len(ifStateNames) {
		return ifStateNames[s]
	}
	return fmt.Sprintf("ifstate(%d)", int(s))
}

// MarshalText implements encoding.TextMarshaler: the name, for any value.
func (s IfState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *IfState) UnmarshalText(b []byte) error {
	i, err := parseEnum(ifStateNames[:], string(b), "state")
	*s = IfState(i)
	return err
}

// Phase is an address's registration state.
type Phase int

// Address phases.
const (
	Pending Phase = iota
	Registering
	Registered
	Failed
	Deregistering
)

var phaseNames = [...]string{"pending", "registering", "registered", "failed", "deregistering"}

func (p Phase) String() string {
	if p >= 0 && int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", int(p))
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

// Summary is the one-line state a supervisor shows (systemd's STATUS=).
type Summary struct {
	Interfaces int // interfaces watched (--interface, --exclude-interface)
	Supported  int // of them, where a server asked for registrations (option 148)
	Addresses  int // addresses known on the watched interfaces
	Registered int // of them, held by a server
}

func (s Summary) String() string {
	return fmt.Sprintf("%d/%d interfaces support registration, %d/%d addresses registered",
		s.Supported, s.Interfaces, s.Registered, s.Addresses)
}
