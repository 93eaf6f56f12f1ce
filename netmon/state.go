package netmon

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"
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

	// cur
	links map[int]*linkEntry
	addrs map[addrKey]addrEntry
	clock uint64 // clock jumps seen

	// view
	vlinks map[int]linkEntry // without the routers map
	vra    map[int]raFlags
	vaddrs map[addrKey]addrEntry
	vclock uint64

	// queue of keys that may differ, oldest first
	q         queue
	qidx      map[key]*queued
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

// queued is a node of the intrusive FIFO of keys (one allocation per key,
// O(1) removal from the middle when a change is undone).
type queued struct {
	k          key
	at         time.Time
	prev, next *queued
}

type queue struct {
	head, tail *queued
	n          int
}

func (q *queue) Len() int { return q.n }

func (q *queue) pushBack(e *queued) *queued {
	e.prev, e.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = e
	} else {
		q.head = e
	}
	q.tail = e
	q.n++
	return e
}

func (q *queue) pushFront(e *queued) *queued {
	e.prev, e.next = nil, q.head
	if q.head != nil {
		q.head.prev = e
	} else {
		q.tail = e
	}
	q.head = e
	q.n++
	return e
}

func (q *queue) remove(e *queued) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		q.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		q.tail = e.prev
	}
	e.prev, e.next = nil, nil
	q.n--
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
		addrs:       map[addrKey]addrEntry{},
		vlinks:      map[int]linkEntry{},
		vra:         map[int]raFlags{},
		vaddrs:      map[addrKey]addrEntry{},
		qidx:        map[key]*queued{},
	}
}

// touch re-evaluates k after a change to cur: queued if the consumer's view
// differs, dequeued if it no longer does (came and went).
func (s *state) touch(k key, at time.Time) {
	_, differs, _ := s.diff(k, at, false)
	if !differs {
		if e, ok := s.qidx[k]; ok {
			s.q.remove(e)
			delete(s.qidx, k)
		}
		return
	}
	if s.overflow {
		return
	}
	if e, ok := s.qidx[k]; ok {
		e.at = at
		return
	}
	if s.q.Len() == 0 {
		s.room = s.limit
	}
	if s.q.Len() >= max(s.room, s.limit) {
		// Drop the queue; next() diffs everything instead.
		s.overflow = true
		s.overflows++
		s.q = queue{}
		clear(s.qidx)
		s.signal()
		return
	}
	s.qidx[k] = s.q.pushBack(&queued{k: k, at: at})
	s.signal()
}

// next pops the next event.
func (s *state) next(now time.Time) (Event, bool) {
	if s.overflow {
		s.overflow = false
		for _, k := range s.allKeys() {
			if _, differs, _ := s.diff(k, now, false); differs {
				s.qidx[k] = s.q.pushBack(&queued{k: k, at: now})
			}
		}
		s.room = s.q.Len() + s.limit
	}
	for s.q.Len() > 0 {
		qe := s.q.head
		s.q.remove(qe)
		delete(s.qidx, qe.k)
		ev, ok, again := s.diff(qe.k, qe.at, true)
		if again {
			s.qidx[qe.k] = s.q.pushFront(qe)
		}
		if ok {
			return ev, true
		}
	}
	return Event{}, false
}

// allKeys lists every key of cur and view, in delivery order: clock, links,
// RA flags, addresses.
func (s *state) allKeys() []key {
	var ks []key
	ks = append(ks, key{kind: kClock})
	idx := map[int]bool{}
	for i := range s.links {
		idx[i] = true
	}
	for i := range s.vlinks {
		idx[i] = true
	}
	for i := range idx {
		ks = append(ks, key{kind: kLink, index: i}, key{kind: kRA, index: i})
	}
	ak := map[addrKey]bool{}
	for k := range s.addrs {
		ak[k] = true
	}
	for k := range s.vaddrs {
		ak[k] = true
	}
	for k := range ak {
		ks = append(ks, key{kind: kAddr, index: k.index, ip: k.ip})
	}
	slices.SortFunc(ks, func(a, b key) int {
		return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.index, b.index), a.ip.Compare(b.ip))
	})
	return ks
}

// diff compares view and cur for k. It returns the event that brings the
// view one step closer, whether there is one, and whether another step is
// needed after it (a removal then a re-creation; a rename then an up).
// With commit it applies the step to the view.
func (s *state) diff(k key, at time.Time, commit bool) (ev Event, ok, again bool) {
	ev.At = at
	switch k.kind {
	case kClock:
		if s.clock == s.vclock {
			return ev, false, false
		}
		if commit {
			s.vclock = s.clock
		}
		ev.Kind = ClockJump
		return ev, true, false

	case kLink:
		c, cok := s.links[k.index]
		v, vok := s.vlinks[k.index]
		switch {
		case !cok && !vok:
			return ev, false, false
		case cok && !vok:
			ev.Kind, ev.Link = LinkAdded, c.Link
			if commit {
				s.setLinkView(c)
			}
			return ev, true, false
		case !cok && vok, c.created != v.created:
			ev.Kind, ev.Link = LinkRemoved, v.Link
			if commit {
				delete(s.vlinks, k.index)
				delete(s.vra, k.index)
			}
			return ev, true, cok
		case c.Name != v.Name:
			ev.Kind, ev.Link = LinkRenamed, c.Link
			if commit {
				v.Name = c.Name
				s.vlinks[k.index] = v
			}
			return ev, true, true
		case c.ups != v.ups && c.Usable():
			ev.Kind, ev.Link = LinkChanged, c.Link
			if commit {
				s.setLinkView(c)
			}
			return ev, true, false
		case c.Up != v.Up || c.LowerUp != v.LowerUp || string(c.HardwareAddr) != string(v.HardwareAddr) || c.ups != v.ups:
			ev.Kind, ev.Link = LinkUpdated, c.Link
			if commit {
				s.setLinkView(c)
			}
			return ev, true, false
		}
		return ev, false, false

	case kRA:
		c, cok := s.links[k.index]
		v := s.vra[k.index]
		if !cok {
			if commit {
				delete(s.vra, k.index)
			}
			return ev, false, false
		}
		if _, seen := s.vlinks[k.index]; !seen || c.ra() == v {
			// Not yet announced: LinkAdded will carry the flags.
			return ev, false, false
		}
		ev.Kind, ev.Link = RAFlags, c.Link
		if commit {
			s.vra[k.index] = c.ra()
		}
		return ev, true, false

	case kAddr:
		ak := addrKey{k.index, k.ip}
		c, cok := s.addrs[ak]
		v, vok := s.vaddrs[ak]
		ev.Link = s.linkFor(k.index)
		switch {
		case !cok && !vok:
			return ev, false, false
		case cok && !vok:
			ev.Kind, ev.Addr = AddrAdded, c.Addr
			if commit {
				s.vaddrs[ak] = c
			}
			return ev, true, false
		case !cok, c.gen != v.gen:
			ev.Kind, ev.Addr = AddrRemoved, v.Addr
			if commit {
				delete(s.vaddrs, ak)
			}
			return ev, true, cok
		case s.addrChanged(c.Addr, v.Addr):
			ev.Kind, ev.Addr = AddrUpdated, c.Addr
			if commit {
				s.vaddrs[ak] = c
			}
			return ev, true, false
		}
		return ev, false, false
	}
	return ev, false, false
}

func (s *state) setLinkView(c *linkEntry) {
	v := *c
	v.routers = nil
	v.HardwareAddr = append([]byte(nil), c.HardwareAddr...)
	s.vlinks[c.Index] = v
	s.vra[c.Index] = c.ra()
}

func (s *state) linkFor(index int) Link {
	if l, ok := s.links[index]; ok {
		return l.Link
	}
	if l, ok := s.vlinks[index]; ok {
		return l.Link
	}
	return Link{Index: index}
}

// addrChanged: anything but the lifetimes' natural countdown and the kernel's
// rounding to seconds.
func (s *state) addrChanged(c, v Addr) bool {
	if c.PrefixLen != v.PrefixLen || c.Flags != v.Flags || c.Proto != v.Proto ||
		c.Class != v.Class || c.State != v.State || c.Registrable != v.Registrable ||
		c.Ifname != v.Ifname {
		return true
	}
	return s.moved(c.Observed, c.Valid, v.Observed, v.Valid) ||
		s.moved(c.Observed, c.Preferred, v.Observed, v.Preferred)
}

// moved says whether two readings of a lifetime give expiry times further
// apart than the slack.
func (s *state) moved(t1 time.Time, d1 time.Duration, t2 time.Time, d2 time.Duration) bool {
	if d1 == Infinite || d2 == Infinite {
		return d1 != d2
	}
	delta := t1.Add(d1).Sub(t2.Add(d2))
	return delta > s.slack || delta < -s.slack
}

// Applying kernel messages.

func (s *state) applyMessages(msgs []message, now time.Time) {
	for _, m := range msgs {
		s.apply(m, now)
	}
}

func (s *state) apply(m message, now time.Time) {
	s.messages++
	switch m.Type {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		l, err := parseLink(m)
		if err != nil {
			return
		}
		switch {
		case l.Family == unix.AF_INET6 && m.Type == unix.RTM_NEWLINK:
			s.setINet6(l, now)
		case l.Family != unix.AF_UNSPEC:
			// AF_BRIDGE port info and the like.
		case m.Type == unix.RTM_NEWLINK:
			s.setLink(l, now)
		default:
			s.delLink(l.Index, now)
		}
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		a, err := parseAddr(m)
		if err != nil {
			return
		}
		if m.Type == unix.RTM_NEWADDR {
			s.setAddr(a, now)
		} else {
			s.delAddr(addrKey{a.Index, a.Raw.IP}, now)
		}
	case unix.RTM_NEWPREFIX:
		// Only the fact matters: the kernel has processed an RA with a PIO
		// on this link. Prefix lifetimes are not tracked: the addresses'
		// own lifetimes (IFA_CACHEINFO) are what counts.
		index, err := prefixIndex(m)
		if err != nil {
			return
		}
		s.kernelSawRA(index, now)
	}
}

func (s *state) nextGen() uint64 {
	s.gen++
	return s.gen
}

func (s *state) setLink(l rawLink, now time.Time) {
	e, ok := s.links[l.Index]
	if !ok {
		e = &linkEntry{created: s.nextGen()}
		e.Index = l.Index
		s.links[l.Index] = e
	}
	wasUsable := ok && e.Usable()
	renamed := ok && e.Name != l.Name
	e.Name = l.Name
	e.Up = l.Flags&unix.IFF_UP != 0
	e.LowerUp = l.Flags&unix.IFF_LOWER_UP != 0
	if l.HW != nil {
		e.HardwareAddr = l.HW
	}
	e.at = now
	// A carrier that went down and came back between two looks (inside
	// an ENOBUFS gap, or before a re-dump) leaves the link usable before
	// and after: the kernel's carrier-up counter still tells.
	flapped := ok && wasUsable && l.HasCarrierUps && e.hasCarrierUps && l.CarrierUps != e.carrierUps
	if l.HasCarrierUps {
		e.carrierUps, e.hasCarrierUps = l.CarrierUps, true
	}
	if (ok && !wasUsable && e.Usable()) || (flapped && e.Usable()) {
		// Possibly a new link (RFC 9686 §4.2): what the RAs said before no
		// longer holds until an RA is processed again.
		e.ups++
		clear(e.routers)
		e.wireSeen = false
		e.kstale = true
		e.computeRA()
	}
	s.touch(key{kind: kLink, index: l.Index}, now)
	s.touch(key{kind: kRA, index: l.Index}, now)
	if renamed {
		for k, a := range s.addrs {
			if k.index == l.Index {
				a.Ifname = l.Name
				s.addrs[k] = a
				s.touch(key{kind: kAddr, index: k.index, ip: k.ip}, now)
			}
		}
	}
}

func (s *state) setINet6(l rawLink, now time.Time) {
	e, ok := s.links[l.Index]
	if !ok || !l.HasINet6 {
		return
	}
	e.kflags = l.INet6
	if !s.dumping {
		// A notification: the kernel changed the flags, so it has just
		// processed an RA (or sent an RS), on this attachment.
		e.kstale = false
	}
	e.computeRA()
	s.touch(key{kind: kRA, index: l.Index}, now)
}

// setWire records a valid RA seen on the wire from router src (see
// routers.observe). It returns when that router's entry expires,
// errRANoLink for an interface not (yet) known, or
// errRATableFull.
func (s *state) setWire(index int, src netip.Addr, ra raInfo, now time.Time) (time.Time, error) {
	e, ok := s.links[index]
	if !ok {
		return time.Time{}, errRANoLink
	}
	if e.routers == nil {
		e.routers = routers{}
	}
	exp, err := e.routers.observe(src, ra, now, s.maxRouters, s.raFlagsHold)
	if err != nil {
		return exp, err
	}
	e.wireSeen = true
	e.computeRA()
	s.touch(key{kind: kRA, index: index}, now)
	return exp, nil
}

// expireRouters forgets the routers on the wire whose lifetime has run out
// by now and returns the earliest expiry left (zero if none).
func (s *state) expireRouters(now time.Time) time.Time {
	var next time.Time
	for i, e := range s.links {
		changed, n := e.routers.expire(now)
		if changed {
			e.computeRA()
			s.touch(key{kind: kRA, index: i}, now)
		}
		if !n.IsZero() && (next.IsZero() || n.Before(next)) {
			next = n
		}
	}
	return next
}

// routerCount is the number of routers kept from the wire, over all links.
func (s *state) routerCount() int {
	n := 0
	for _, e := range s.links {
		n += len(e.routers)
	}
	return n
}

func (s *state) delLink(index int, now time.Time) {
	if _, ok := s.links[index]; !ok {
		return
	}
	delete(s.links, index)
	for k := range s.addrs {
		if k.index == index {
			delete(s.addrs, k)
			s.touch(key{kind: kAddr, index: k.index, ip: k.ip}, now)
		}
	}
	s.touch(key{kind: kLink, index: index}, now)
	s.touch(key{kind: kRA, index: index}, now)
}

func (s *state) makeAddr(p parsedAddr, now time.Time) Addr {
	c, st, reg := Classify(p.Raw, s.copts)
	a := Addr{
		Index:       p.Index,
		IP:          p.Raw.IP,
		PrefixLen:   p.Raw.PrefixLen,
		Flags:       p.Raw.Flags,
		Proto:       p.Raw.Proto,
		Preferred:   p.Raw.Preferred,
		Valid:       p.Raw.Valid,
		Observed:    now,
		Class:       c,
		State:       st,
		Registrable: reg,
	}
	if l, ok := s.links[p.Index]; ok {
		a.Ifname = l.Name
	}
	return a
}

func (s *state) setAddr(p parsedAddr, now time.Time) {
	k := addrKey{p.Index, p.Raw.IP}
	a := s.makeAddr(p, now)
	old, ok := s.addrs[k]
	e := addrEntry{Addr: a, gen: old.gen}
	if !ok {
		e.gen = s.nextGen()
	}
	s.addrs[k] = e
	s.touch(key{kind: kAddr, index: k.index, ip: k.ip}, now)
}

func (s *state) delAddr(k addrKey, now time.Time) {
	if _, ok := s.addrs[k]; !ok {
		return
	}
	delete(s.addrs, k)
	s.touch(key{kind: kAddr, index: k.index, ip: k.ip}, now)
}

// kernelSawRA: the kernel processed an RA with a PIO (RTM_NEWPREFIX), so its
// flags describe the current attachment.
func (s *state) kernelSawRA(index int, now time.Time) {
	e, ok := s.links[index]
	if !ok || !e.kstale {
		return
	}
	e.kstale = false
	e.computeRA()
	s.touch(key{kind: kRA, index: index}, now)
}

func (s *state) clockJump(now time.Time) {
	s.clock++
	s.touch(key{kind: kClock}, now)
}

// resync replaces cur with a full dump: links and addresses that are not in
// it are removed, the others set, and only differences reach the queue.
func (s *state) resync(msgs []message, now time.Time) {
	seenLinks := map[int]bool{}
	seenAddrs := map[addrKey]bool{}
	for _, m := range msgs {
		switch m.Type {
		case unix.RTM_NEWLINK:
			if l, err := parseLink(m); err == nil && l.Family == unix.AF_UNSPEC {
				seenLinks[l.Index] = true
			}
		case unix.RTM_NEWADDR:
			if a, err := parseAddr(m); err == nil {
				seenAddrs[addrKey{a.Index, a.Raw.IP}] = true
			}
		}
	}
	for i := range s.links {
		if !seenLinks[i] {
			s.delLink(i, now)
		}
	}
	for k := range s.addrs {
		if !seenAddrs[k] {
			s.delAddr(k, now)
		}
	}
	s.dumping = true
	s.applyMessages(msgs, now)
	s.dumping = false
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
