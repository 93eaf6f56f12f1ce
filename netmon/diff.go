// What the consumer is told: touch queues the keys on which the view may
// differ from cur, next pops them and diff computes each event from the
// difference.

package netmon

import (
	"cmp"
	"slices"
	"time"
)

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
	s.qpeak = max(s.qpeak, s.q.Len())
	s.signal()
}

// drained lets the index a long queue grew go once the queue is empty (a
// Go map keeps its buckets after its keys are deleted: a dump of 10,000
// addresses would keep about 0.5 MB for good).
func (s *state) drained() {
	if s.q.Len() == 0 && s.qpeak > 64 {
		s.qidx, s.qpeak = map[key]*queued{}, 0
	}
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
		s.qpeak = max(s.qpeak, s.q.Len())
	}
	defer s.drained()
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
