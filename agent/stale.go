package agent

import (
	"slices"
	"time"
)

// staleAddrs are the deregistrations that wait for a link, by its name:
// the state file's addresses at start (not yet claimed by discovery on
// their link), those removed while their link was down, and those of a
// link that was removed (waitForLink, departures.go). Each is in every
// snapshot, so a restart loses none. It keeps the earliest moment one of
// their bindings has surely run out on the server (expiry: dropExpired
// then forgets them), and the names of removed links with entries left
// (a link created under such a name is a replug: relinkGrace).
type staleAddrs struct {
	byIface map[string][]savedAddr
	expiry  time.Time // zero: none runs out
	// removedLinks: links removed (LinkRemoved) with entries left.
	removedLinks map[string]bool
}

func newStaleAddrs(saved []savedAddr) staleAddrs {
	s := staleAddrs{byIface: map[string][]savedAddr{}, removedLinks: map[string]bool{}}
	for _, sa := range saved {
		s.byIface[sa.Iface] = append(s.byIface[sa.Iface], sa)
	}
	s.findExpiry()
	return s
}

// of lists the entries waiting for the link named name.
func (s *staleAddrs) of(name string) []savedAddr { return s.byIface[name] }

// add keeps sa (its Iface the link's name) until its link claims it, and
// reports whether it was not there yet.
func (s *staleAddrs) add(sa savedAddr) bool {
	if slices.ContainsFunc(s.byIface[sa.Iface], func(o savedAddr) bool { return o.Addr == sa.Addr }) {
		return false
	}
	s.byIface[sa.Iface] = append(s.byIface[sa.Iface], sa)
	if at, ok := sa.expires(); ok && (s.expiry.IsZero() || at.Before(s.expiry)) {
		s.expiry = at
	}
	return true
}

// take removes and returns the entries of the link named name; ok is false
// when there are none.
func (s *staleAddrs) take(name string) (list []savedAddr, ok bool) {
	list, ok = s.byIface[name]
	if ok {
		delete(s.byIface, name)
		s.findExpiry()
	}
	return list, ok
}

// remove forgets sa's entry: its deregistration got out after all.
func (s *staleAddrs) remove(sa savedAddr) {
	list := s.byIface[sa.Iface]
	if i := slices.IndexFunc(list, func(o savedAddr) bool { return o.Addr == sa.Addr }); i >= 0 {
		if list = slices.Delete(list, i, i+1); len(list) == 0 {
			delete(s.byIface, sa.Iface)
		} else {
			s.byIface[sa.Iface] = list
		}
		s.findExpiry()
	}
}

// dropExpired forgets the entries whose binding has surely run out by now
// and returns them.
func (s *staleAddrs) dropExpired(now time.Time) (dropped []savedAddr) {
	for name, list := range s.byIface {
		kept := list[:0]
		for _, sa := range list {
			if sa.expired(now) {
				dropped = append(dropped, sa)
			} else {
				kept = append(kept, sa)
			}
		}
		if len(kept) == 0 {
			delete(s.byIface, name)
			delete(s.removedLinks, name)
		} else {
			s.byIface[name] = kept
		}
	}
	s.findExpiry()
	return dropped
}

// linkRemoved notes that the link named name was removed: if entries wait
// for it, a link created under that name is a replug.
func (s *staleAddrs) linkRemoved(name string) {
	if len(s.byIface[name]) > 0 {
		s.removedLinks[name] = true
	}
}

// takeReplug reports whether a link named name is a replug (linkRemoved),
// and forgets it.
func (s *staleAddrs) takeReplug(name string) bool {
	if !s.removedLinks[name] {
		return false
	}
	delete(s.removedLinks, name)
	return true
}

// findExpiry finds the next entry whose binding runs out.
func (s *staleAddrs) findExpiry() {
	s.expiry = time.Time{}
	for _, list := range s.byIface {
		for _, sa := range list {
			if at, ok := sa.expires(); ok && (s.expiry.IsZero() || at.Before(s.expiry)) {
				s.expiry = at
			}
		}
	}
}
