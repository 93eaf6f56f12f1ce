package agent

import (
	"net/netip"
	"time"
)

// A link as the machine follows it: its identity, its addresses, and its
// discovery (RFC 9686 §4.1) as one named state.

type iface struct {
	index int
	name  string
	hw    string // hardware address: with the name, the link's identity in the state file
	up    bool   // admin up and carrier
	// relinked: this run saw the link down, or removed under this name
	// (a replug); addresses that left meanwhile get relinkGrace to come
	// back once it is up (claimStale).
	relinked bool
	// raMO: netmon reports an RA with M or O in effect on the link (RFC
	// 9686 §4.1); with RequireRAFlags, nothing new starts while it is false.
	raMO       bool
	disc       discovery
	linkLocals map[netip.Addr]bool // DAD-complete link-local addresses
	linkLocal  netip.Addr          // the one of them discovery uses
	addrs      map[netip.Addr]*addr
}

// support is what discovery knows of a link while no probe runs.
type support int

const (
	supportUnknown support = iota // not asked yet, or asked again afresh (a reconnection)
	linkDown                      // down: nothing can be asked
	supported                     // a server asked for registrations (option 148)
	unsupported                   // a Reply without option 148: asked again after reprobeUnsupported
)

// probe is a discovery exchange in flight.
type probe struct {
	gen  int        // its generation: results of others are stale
	from netip.Addr // the link-local address it is sent from
}

// discovery is a link's discovery state: a probe running, or what the last
// one found; and when the next one is due.
type discovery struct {
	known    support
	running  *probe    // nil: none
	next     time.Time // when a probe is due again (a retry, a re-probe); zero: none
	failures int       // consecutive failed probes (retry backoff)
}

// state is the link's discovery state as status shows it.
func (d *discovery) state() IfState {
	if d.running != nil {
		return IfProbing
	}
	switch d.known {
	case linkDown:
		return IfDown
	case supported:
		return IfSupported
	case unsupported:
		return IfUnsupported
	}
	return IfUnknown
}

// invalid names the combination of d's parts that must not be, or is
// empty: a probe runs only while nothing is known (it asks afresh).
func (d *discovery) invalid() string {
	switch {
	case d.known < supportUnknown || d.known > unsupported:
		return "unknown support"
	case d.running != nil && d.known != supportUnknown:
		return "a probe running beside a known answer"
	}
	return ""
}
