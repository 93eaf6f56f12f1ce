package netmon

import (
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Addr is one IPv6 address as the kernel reported it.
type Addr struct {
	Index     int
	Ifname    string
	IP        netip.Addr
	PrefixLen int
	Flags     uint32 // IFA_F_*
	Proto     uint8  // IFA_PROTO, 0 if absent
	// Preferred and Valid are the remaining lifetimes as read at Observed
	// (the kernel counts them down); Infinite for 0xffffffff.
	Preferred, Valid time.Duration
	Observed         time.Time
	Class            Class
	State            State
	// Registrable says whether RFC 9686 lets this address be registered
	// (see Classify).
	Registrable bool
}

// Remaining returns the lifetimes left at now, counted from Observed.
func (a Addr) Remaining(now time.Time) (preferred, valid time.Duration) {
	el := now.Sub(a.Observed)
	sub := func(d time.Duration) time.Duration {
		if d == Infinite {
			return d
		}
		return max(d-el, 0)
	}
	return sub(a.Preferred), sub(a.Valid)
}

func (a Addr) String() string {
	return fmt.Sprintf("%s/%d on %s(%d) %s %s pref %s valid %s flags %#x proto %d reg %t",
		a.IP, a.PrefixLen, a.Ifname, a.Index, a.Class, a.State, lifetimeString(a.Preferred), lifetimeString(a.Valid), a.Flags, a.Proto, a.Registrable)
}

// lifetimeString formats a lifetime, Infinite as "forever".
func lifetimeString(d time.Duration) string {
	if d == Infinite {
		return "forever"
	}
	return d.String()
}

// Link is one network interface.
type Link struct {
	Index        int
	Name         string
	Up, LowerUp  bool // IFF_UP, IFF_LOWER_UP (carrier)
	HardwareAddr net.HardwareAddr
	// Managed and Other are the M and O flags of the last RA received on
	// the link, from the kernel (IFLA_INET6_FLAGS) or, with
	// Options.WatchRAs, from RAs seen on the wire (set if either says so).
	// From the wire, a flag holds while a router whose last RA set it is
	// within that RA's Router Lifetime (with lifetime 0, a router that is
	// not a default router, for Options.RAFlagsHold), and only RAs that pass RFC 4861
	// §6.1.2 count: link-local source, hop limit 255, well-formed. At most
	// Options.MaxRouters routers are kept per link.
	// When the link becomes usable again after being down (LinkChanged),
	// the flags read false until an RA is seen on the new attachment:
	// the kernel keeps IF_RA_MANAGED/OTHERCONF across down/up, and they
	// may describe the previous link. The kernel's flags count again once
	// it reports a change of them or a PIO (RTM_NEWPREFIX), i.e. once it
	// has processed an RA; with WatchRAs, any valid RA on the wire counts.
	// RAReceived says an RA has been seen: the kernel's IF_RA_RCVD (set
	// only for an RA that answers the kernel's own RS), or M or O set, or
	// any valid RA on the wire. With the kernel alone, an unsolicited RA with
	// neither flag is not noticed.
	Managed, Other, RAReceived bool
}

// Usable says whether the link is administratively up with carrier.
func (l Link) Usable() bool { return l.Up && l.LowerUp }

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	LinkAdded EventKind = iota
	LinkRemoved
	LinkRenamed
	// LinkUpdated: admin state, carrier or hardware address changed.
	LinkUpdated
	// LinkChanged: the link became usable (up with carrier) after having been
	// down since the consumer last heard of it: the link may be a new one
	// (RFC 9686 §4.2: re-discover server support). Reported even if the
	// down/up happened entirely between two Next calls.
	LinkChanged
	AddrAdded
	// AddrUpdated: flags, class, state or lifetimes (by more than
	// Options.LifetimeSlack) changed.
	AddrUpdated
	AddrRemoved
	// RAFlags: the link's Managed, Other or RAReceived changed.
	RAFlags
	// ClockJump: the wall clock moved against the monotonic clock (settime
	// or suspend/resume). Every address's lifetimes are re-read right after;
	// changed ones follow as AddrUpdated.
	ClockJump
)

var kindNames = [...]string{
	LinkAdded: "link-added", LinkRemoved: "link-removed", LinkRenamed: "link-renamed",
	LinkUpdated: "link-updated", LinkChanged: "link-changed", AddrAdded: "addr-added",
	AddrUpdated: "addr-updated", AddrRemoved: "addr-removed", RAFlags: "ra-flags",
	ClockJump: "clock-jump",
}

func (k EventKind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("event(%d)", int(k))
}

// Event is one change. Link is set for every kind but ClockJump (for address
// events it is the address's link, as last known); Addr for Addr* events
// (for AddrRemoved: the address as last reported). At is when the change was
// observed.
type Event struct {
	Kind EventKind
	Link Link
	Addr Addr
	At   time.Time
}

func (e Event) String() string {
	switch e.Kind {
	case AddrAdded, AddrUpdated, AddrRemoved:
		return e.Kind.String() + " " + e.Addr.String()
	case ClockJump:
		return e.Kind.String()
	}
	return fmt.Sprintf("%s %s(%d) up %t lower %t M %t O %t ra %t", e.Kind, e.Link.Name, e.Link.Index,
		e.Link.Up, e.Link.LowerUp, e.Link.Managed, e.Link.Other, e.Link.RAReceived)
}
