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
	for _, ifc := range m.ifaces {
		for ip, ad := range ifc.addrs {
			if !ad.held() || m.stopDeregistered[key{ifc.index, ip}] {
				continue
			}
			out = append(out, m.savedOf(ifc, ip, ad))
		}
	}
	// Owed deregistrations, and those under way: one the stop could not
	// get out (refused, or abandoned at StopTimeout) must be in the last
	// write, for the next start to send.
	gone := map[key]savedAddr{}
	for k, d := range m.deregInFlight {
		gone[k] = d.rec
	}
	for k, sa := range m.deregDue {
		gone[k] = sa
	}
	for k, sa := range gone {
		ifc, ok := m.ifaces[k.ifindex]
		if !ok || m.stopDeregistered[k] {
			continue // a removed link's are in stale (linkGone)
		}
		if ad, ok := ifc.addrs[k.addr]; ok && ad.held() {
			continue // listed above
		}
		sa.Iface, sa.HW = ifc.name, ifc.hw
		out = append(out, sa)
	}
	for _, list := range m.stale.byIface {
		out = append(out, list...)
	}
	slices.SortFunc(out, func(x, y savedAddr) int {
		return cmp.Or(strings.Compare(x.Iface, y.Iface), x.Addr.Compare(y.Addr))
	})
	return out
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
	snap := m.snapshot()
	h := hashSnapshot(snap)
	if m.saved && h == m.savedHash {
		return
	}
	m.saved, m.savedHash = true, h
	m.emit(effSave{snap})
}
