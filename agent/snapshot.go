package agent

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/addrreg/addrreg/scheduler"
)

// The state file's contents (statefile.go) as the machine sees them: what
// the server may hold from us, handed to the writer (effSave) at most once
// per stateDebounce when it changed.

// savedOf is ad on ifc as the state file lists it.
func (m *machine) savedOf(ifc *iface, ip netip.Addr, ad *addr) savedAddr {
	sa := savedAddr{Iface: ifc.name, HW: ifc.hw, Addr: ip}
	if ad != nil {
		if ad.hold.kind == holdRegistered {
			sa.Preferred = scheduler.Seconds(ad.hold.preferred)
		}
		sa.At, sa.Valid = ad.limit.seconds()
	}
	return sa
}

// snapshot lists what the server may hold from us: addresses registered
// or with an exchange sent, those owed a deregistration or with one under
// way, and the file's entries not yet claimed.
func (m *machine) snapshot() []savedAddr {
	out := []savedAddr{}
	m.eachSaved(func(sa savedAddr) { out = append(out, sa) })
	slices.SortFunc(out, func(x, y savedAddr) int {
		return cmp.Or(strings.Compare(x.Iface, y.Iface), x.Addr.Compare(y.Addr))
	})
	return out
}

// eachSaved calls fn for each entry of the snapshot, in no order.
func (m *machine) eachSaved(fn func(savedAddr)) {
	for _, ifc := range m.ifaces {
		for ip, ad := range ifc.addrs {
			if !ad.held() || m.stopDeregistered[key{ifc.index, ip}] {
				continue
			}
			fn(m.savedOf(ifc, ip, ad))
		}
	}
	// Owed deregistrations, and those under way: one the stop could not
	// get out (refused, or abandoned at StopTimeout) must be in the last
	// write, for the next start to send.
	gone := func(k key, sa savedAddr) {
		ifc, ok := m.ifaces[k.ifindex]
		if !ok || m.stopDeregistered[k] {
			return // a removed link's are in stale (linkGone)
		}
		if ad, ok := ifc.addrs[k.addr]; ok && ad.held() {
			return // listed above
		}
		sa.Iface, sa.HW = ifc.name, ifc.hw
		fn(sa)
	}
	for k, d := range m.deregInFlight {
		if _, due := m.deregDue[k]; !due {
			gone(k, d.rec)
		}
	}
	for k, sa := range m.deregDue {
		gone(k, sa)
	}
	for _, list := range m.stale.byIface {
		for _, sa := range list {
			fn(sa)
		}
	}
}

// stateChanged arms the debounce after the machine handled anything.
func (m *machine) stateChanged() {
	if m.cfg.StatePath == "" || !m.saveAt.IsZero() {
		return
	}
	m.saveAt = m.now.Add(stateDebounce)
}

// saveState hands a changed snapshot to the writer (effSave), which
// replaces one it has not written yet.
func (m *machine) saveState() {
	m.saveAt = time.Time{}
	h := m.snapshotHash()
	if m.saved && h == m.savedHash {
		return
	}
	m.saved, m.savedHash = true, h
	m.emit(effSave{m.snapshot()})
}

// snapshotHash is hashSnapshot(m.snapshot()) without building it: the
// check after each change costs a pass over the addresses, not a sorted
// copy of them.
func (m *machine) snapshotHash() uint64 {
	var h uint64
	m.eachSaved(func(sa savedAddr) { h += hashSaved(sa) })
	return h
}
