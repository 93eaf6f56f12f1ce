package netmon

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// state is the monitor's model: what the kernel says now (cur), what the
// consumer has been told (view), and the keys on which the two may differ
// (the queue). Events are never stored: Next computes each one from the
// difference between view and cur, so a queue entry coalesces any number of
// changes and always yields the latest state, and memory is bounded by the
// size of the kernel's state, not by the rate of change. All methods need the
// Monitor's mutex.
type state struct {
	copts ClassifyOptions
	limit int
	// room is how long the queue may grow before it overflows: limit, or
	// after an overflow's rebuild, the rebuilt length plus limit, so that
	// one overflow does not make every later change overflow again while
	// the consumer works through the rebuilt queue (it resets when empty).
	room  int
	slack time.Duration
	// maxRouters bounds each link's table of routers seen on the wire.
	maxRouters int
	// raFlagsHold: how long an RA with Router Lifetime 0 counts.
	raFlagsHold time.Duration
	signal      func()
	gen         uint64 // source of generations
	resyncs     int
	messages    int
	dumping     bool // applying a dump, not notifications

	// cur. An address's entry is never changed in place, so the view
	// shares it once the consumer has been told (a change makes a new
	// one): one copy of each address, not two.
	links map[int]*linkEntry
	addrs map[addrKey]*addrEntry
	clock uint64 // clock jumps seen

	// view
	vlinks map[int]linkEntry // without the routers map
	vra    map[int]raFlags
	vaddrs map[addrKey]*addrEntry
	vclock uint64

	// queue of keys that may differ, oldest first
	q         queue
	qidx      map[key]*queued
	qpeak     int  // the queue's longest since qidx was made (drained)
	overflow  bool // the queue overflowed: diff everything at the next Next
	overflows int
}

type keyKind uint8

const (
	kClock keyKind = iota
	kLink
	kRA
	kAddr
)

type key struct {
	kind  keyKind
	index int
	ip    netip.Addr
}

type addrKey struct {
	index int
	ip    netip.Addr
}

type raFlags struct{ managed, other, rcvd bool }

type linkEntry struct {
	Link
	created uint64 // generation: a new one if the index is reused
	ups     uint64 // times the link became usable after not being
	// carrierUps is the kernel's IFLA_CARRIER_UP_COUNT when last seen.
	carrierUps    uint32
	hasCarrierUps bool
	kflags        uint32 // IFLA_INET6_FLAGS
	// kstale: the link came up again and the kernel has not processed an
	// RA since, so kflags may describe the previous link (the kernel keeps
	// IF_RA_MANAGED/OTHERCONF across carrier and admin down/up).
	kstale bool
	// routers seen on the wire (Options.WatchRAs) within their lifetime;
	// wireSeen: an RA was accepted from the wire on this attachment.
	routers  routers
	wireSeen bool
	at       time.Time
}

func (e *linkEntry) computeRA() {
	kflags := e.kflags
	if e.kstale {
		kflags = 0
	}
	f := raFlags{
		managed: kflags&ifRAManaged != 0,
		other:   kflags&ifRAOtherCnf != 0,
		// IF_RA_RCVD is only set for an RA answering our own RS, so an
		// RA with M or O set counts as received too.
		rcvd: kflags&(ifRARcvd|ifRAManaged|ifRAOtherCnf) != 0,
	}
	m, o := e.routers.flags()
	f.managed = f.managed || m
	f.other = f.other || o
	f.rcvd = f.rcvd || e.wireSeen
	e.Managed, e.Other, e.RAReceived = f.managed, f.other, f.rcvd
}

func (e *linkEntry) ra() raFlags { return raFlags{e.Managed, e.Other, e.RAReceived} }

type addrEntry struct {
	Addr
	gen uint64
}

func newState(copts ClassifyOptions, limit int, slack time.Duration) *state {
	return &state{
		copts:       copts,
		limit:       limit,
		slack:       slack,
		maxRouters:  DefaultMaxRouters,
		raFlagsHold: DefaultRAFlagsHold,
		signal:      func() {},
		links:       map[int]*linkEntry{},
		addrs:       map[addrKey]*addrEntry{},
		vlinks:      map[int]linkEntry{},
		vra:         map[int]raFlags{},
		vaddrs:      map[addrKey]*addrEntry{},
		qidx:        map[key]*queued{},
	}
}

func (s *state) snapshot() ([]Link, []Addr) {
	links := make([]Link, 0, len(s.links))
	for _, l := range s.links {
		l := l.Link
		l.HardwareAddr = append([]byte(nil), l.HardwareAddr...)
		links = append(links, l)
	}
	slices.SortFunc(links, func(a, b Link) int { return cmp.Compare(a.Index, b.Index) })
	addrs := make([]Addr, 0, len(s.addrs))
	for _, a := range s.addrs {
		addrs = append(addrs, a.Addr)
	}
	slices.SortFunc(addrs, func(a, b Addr) int { return cmp.Or(cmp.Compare(a.Index, b.Index), a.IP.Compare(b.IP)) })
	return links, addrs
}
