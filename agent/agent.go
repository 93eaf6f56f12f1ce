// Package agent wires netmon, registrar and scheduler into addrregd's
// behaviour (RFC 9686 §4): per interface it discovers whether a server wants
// registrations, then registers every eligible address from that address,
// refreshes the registrations as their lifetimes change and deregisters
// addresses that go away.
//
// It is internal to addrregd, not a supported API: it is exported only for
// cmd/addrregd and changes with the daemon.
//
// The behaviour is a state machine with pure transitions (step.go):
// machine.step(now, event) changes the state and returns effects (start a
// probe or an exchange, cancel one, arm the one timer, save the state file,
// beat, log). One goroutine, Run's (lifecycle.go), owns the machine: it
// receives netmon events, probe and exchange results, its timer and control
// requests (Rediscover, Status), steps the machine and performs the
// effects. Probes and exchanges run in their own goroutines, at most
// Config.MaxInflight at once and started no faster than Config.Rate
// (pacing.go).
//
// Per link, discovery (discovery.go) is one state (link.go): unknown →
// probing → supported / unsupported (and down). Per address (addresses.go)
// the state has three named parts (addrstate.go): how the last exchange
// ended (not registered / registered / failed, retried after a backoff:
// retry.go), what runs (idle / an exchange in flight / in flight with
// another look owed / paused for the RA condition) and what the server may
// hold (nothing / unconfirmed / a registration, until a bound). An address
// that leaves is owed a deregistration (departures.go), which waits for its
// link while the link is down or removed (stale.go). Every exchange carries
// the host's name (Config.FQDN); a rename (Config.HostNames) registers
// every registered address again (hostNameChanged, addresses.go). What the
// server may hold is kept in a state file across restarts (snapshot.go,
// statefile.go); status.go answers what the daemon shows.
//
// Reading order. The files are listed top first; a file uses only
// definitions in files below it (TestFileOrder checks it, counting every
// use of a package-level name, method or field):
//
//	lifecycle.go     the owner loop: Agent, Run, performing effects
//	step.go          the transition function and the one wake-up
//	stop.go          the machine's end
//	heartbeat.go     the summary a supervisor's watchdog sees
//	pacing.go        the queue's front: what a key needs, rate and in-flight bound
//	discovery.go     per link: (re)discovery, the RA condition, link-locals
//	addresses.go     per address: registration, refresh, results
//	departures.go    deregistrations owed to addresses that left
//	retry.go         backoff after a failed exchange; fatal errors
//	snapshot.go      what the state file holds, handed to its writer
//	status.go        the status report and the notes it keeps
//	machine.go       the machine's fields and small helpers
//	effects.go       events in, effects out
//	queue.go         the pacing queue of keys
//	link.go          a link and its discovery state
//	addrstate.go     an address and its named sub-states
//	stale.go         deregistrations waiting for their link
//	statefile.go     the state file's format, reading, atomic writer
//	agent.go         Config and the interfaces the agent needs
//	statusschema.go  the status schema's types
//	duid.go          the DUID from the machine ID (used by cmd/addrregd)
package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
	"github.com/addrreg/addrreg/scheduler"
)

// Monitor is what the agent needs of netmon.
type Monitor interface {
	Next(ctx context.Context) (netmon.Event, error)
	Lookup(ifindex int, ip netip.Addr) (netmon.Addr, bool, error)
}

// NameSource reports the name to send in the Client FQDN option (RFC 4704)
// each time it changes ("": none): cmd/addrregd's follows the host's name
// (internal/hostname). Next blocks until the next change or ctx's end.
type NameSource interface {
	Next(ctx context.Context) (string, error)
}

// Registrar is what the agent needs of the registrar.
type Registrar interface {
	Probe(ctx context.Context, ifindex int, linkLocal netip.Addr) (bool, error)
	Register(ctx context.Context, t registrar.Target) (registrar.Result, error)
}

// Config is the agent's behaviour; cmd/addrregd fills it from flags.
type Config struct {
	// Enable: when false the agent watches and logs but sends nothing at all.
	Enable bool
	// Interfaces limits the agent to these interface names (empty = all);
	// Exclude removes names from that set.
	Interfaces, Exclude []string
	// RequireRAFlags: start registrations and refreshes on an interface
	// only while netmon reports an RA with M or O in effect there (RFC 9686
	// §4.1 SHOULD NOT); a lapse pauses them without deregistering.
	RequireRAFlags bool
	// Deregister sends zero lifetimes when an address leaves its interface.
	Deregister bool
	// SkipTemporary keeps RFC 8981 temporary addresses off the server
	// (--register-temporary=false); by default every self-generated
	// address is registered. RFC 9686 §6 weighs what registering them
	// reveals.
	SkipTemporary bool
	// DeregisterOnStop deregisters every registered address when Run's
	// context ends. A stopping daemon does not mean the addresses are out of
	// use, so it is off by default.
	DeregisterOnStop bool
	// StopTimeout bounds the work done after the context ends (default 1.5 s).
	StopTimeout time.Duration
	// Policy is the refresh policy (RFC 9686 §4.6).
	Policy scheduler.Policy
	// Rate is how many exchanges may start per second (bursts after start-up
	// or a renumbering); Burst how many at once. 0 = 100/s, burst 10.
	Rate  float64
	Burst int
	// MaxInflight bounds concurrent exchanges (default 256).
	MaxInflight int
	// Heartbeat, if set, is called from the owner loop when it starts and
	// every HeartbeatInterval (default 10 s) with a summary; addrregd sends
	// systemd's WATCHDOG=1 and STATUS= from it. It should not block: while
	// it does, the loop does nothing else (and beats no more).
	Heartbeat         func(Summary)
	HeartbeatInterval time.Duration
	// Retry is the backoff after a failed exchange or discovery; the zero
	// value means scheduler.DefaultRetry (30 s doubling to 1 h).
	Retry scheduler.Retry
	// FQDN is the name every ADDR-REG-INFORM carries in a Client FQDN
	// option (RFC 9686 §4.2, RFC 4704) from the start; empty: none.
	FQDN string
	// HostNames, if set, reports each new name to send (the host was
	// renamed): every registered address is registered again with it,
	// paced like any burst (Rate), and later exchanges carry it.
	HostNames NameSource
	// StatePath is the state file (statefile.go); empty: none.
	StatePath string
	Clock     scheduler.Clock
	// Rand returns values uniform in [0, 1) for the retry jitter; default
	// math/rand/v2.Float64. Called from Run's goroutine only (by the
	// machine's transitions).
	Rand   func() float64
	Logger *slog.Logger
}

type key struct {
	ifindex int
	addr    netip.Addr
}

func (k key) String() string { return fmt.Sprintf("%s%%%d", k.addr, k.ifindex) }
