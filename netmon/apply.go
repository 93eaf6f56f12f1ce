// Applying kernel messages (notifications and dumps) and RAs seen on the
// wire to cur.

package netmon

import (
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

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
				n := *a
				n.Ifname = l.Name
				s.addrs[k] = &n
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
	e := &addrEntry{Addr: a}
	if old, ok := s.addrs[k]; ok {
		e.gen = old.gen
	} else {
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
