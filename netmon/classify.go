package netmon

import (
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Infinite is the lifetime the kernel reports as 0xffffffff ("forever").
const Infinite = time.Duration(1<<63 - 1)

// IFA_PROTO values (linux/if_addr.h, kernel 6.3+). ProtoUnspec is also what an
// older kernel that sends no IFA_PROTO attribute yields.
const (
	ProtoUnspec   uint8 = 0 // added from user space (ip, DHCPv6 clients, network managers)
	ProtoKernelLo uint8 = 1 // ::1
	ProtoKernelRA uint8 = 2 // kernel SLAAC (6.18 gives RFC 8981 temporary addresses 0)
	ProtoKernelLL uint8 = 3 // kernel link-local
)

// Class says where an address came from, as far as the kernel lets us tell.
type Class int

// Address classes. Order of precedence in Classify: Loopback, Multicast,
// LinkLocal, Other, DHCPv6, ULA, Temporary, StablePrivacy, Static, Global.
const (
	ClassUnknown Class = iota
	// ClassGlobal is a global address with finite lifetimes that is none of the
	// more specific classes: SLAAC with a modified EUI-64 interface identifier,
	// or an address a tool added with finite lifetimes and a prefix shorter
	// than /128.
	ClassGlobal
	// ClassTemporary is an RFC 8981 temporary (privacy) address (IFA_F_TEMPORARY).
	ClassTemporary
	// ClassStablePrivacy is an RFC 7217 stable-privacy SLAAC address
	// (IFA_F_STABLE_PRIVACY, addr_gen_mode 2/3).
	ClassStablePrivacy
	// ClassULA is any unique local address (fc00::/7) not assigned by DHCPv6.
	ClassULA
	// ClassStatic is a global address added without lifetimes
	// (IFA_F_PERMANENT) or with an infinite valid lifetime.
	ClassStatic
	// ClassDHCPv6 is an address assigned by a DHCPv6 client (IA_NA/IA_TA); see Classify.
	ClassDHCPv6
	ClassLinkLocal
	ClassLoopback
	ClassMulticast
	// ClassOther is any other non-global address: unspecified, IPv4-mapped,
	// deprecated site-local (fec0::/10), IPv4.
	ClassOther
)

var classNames = [...]string{
	ClassUnknown:       "unknown",
	ClassGlobal:        "global",
	ClassTemporary:     "temporary",
	ClassStablePrivacy: "stable-privacy",
	ClassULA:           "ula",
	ClassStatic:        "static",
	ClassDHCPv6:        "dhcpv6",
	ClassLinkLocal:     "link-local",
	ClassLoopback:      "loopback",
	ClassMulticast:     "multicast",
	ClassOther:         "other",
}

func (c Class) String() string {
	if c >= 0 && int(c) < len(classNames) {
		return classNames[c]
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// State is the address's DAD / lifetime state.
type State int

// Address states.
const (
	StatePreferred State = iota
	StateTentative
	StateOptimistic
	StateDeprecated
	StateDADFailed
)

var stateNames = [...]string{
	StatePreferred:  "preferred",
	StateTentative:  "tentative",
	StateOptimistic: "optimistic",
	StateDeprecated: "deprecated",
	StateDADFailed:  "dad-failed",
}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// RawAddr is what the kernel says about one address, before classification.
type RawAddr struct {
	IP        netip.Addr
	PrefixLen int
	Flags     uint32 // IFA_F_*, from IFA_FLAGS when present
	Proto     uint8  // IFA_PROTO; ProtoUnspec when absent
	Preferred time.Duration
	Valid     time.Duration
}

// ClassifyOptions are the administrator's overrides.
type ClassifyOptions struct {
	// Include and Exclude override the DHCPv6 rule and registrability by
	// prefix. The longest matching prefix wins; on a tie Exclude wins.
	// An included address is never classified ClassDHCPv6 and is registrable
	// if it is otherwise eligible (scope and DAD rules cannot be overridden:
	// RFC 9686 §4.1 makes them MUSTs). An excluded address is never registrable.
	Include, Exclude []netip.Prefix
}

// Address flags as the kernel defines them (linux/if_addr.h).
const (
	flagTemporary     = unix.IFA_F_TEMPORARY      // 0x1
	flagOptimistic    = unix.IFA_F_OPTIMISTIC     // 0x4
	flagDADFailed     = unix.IFA_F_DADFAILED      // 0x8
	flagDeprecated    = unix.IFA_F_DEPRECATED     // 0x20
	flagTentative     = unix.IFA_F_TENTATIVE      // 0x40
	flagPermanent     = unix.IFA_F_PERMANENT      // 0x80
	flagStablePrivacy = unix.IFA_F_STABLE_PRIVACY // 0x800
)

var (
	ulaPrefix       = netip.MustParsePrefix("fc00::/7")
	linkLocalPrefix = netip.MustParsePrefix("fe80::/10")
	siteLocalPrefix = netip.MustParsePrefix("fec0::/10")
)

// Classify decides an address's class, state and whether RFC 9686 lets it be
// registered. It is pure.
//
// The DHCPv6 rule. The kernel does not mark addresses a DHCPv6 client adds,
// so they are recognised by how every common client (dhclient,
// NetworkManager, systemd-networkd, dhcpcd) adds an IA_NA/IA_TA address: as a
// /128, from user space (IFA_PROTO absent or 0; 2 = kernel SLAAC is never
// DHCPv6), with finite lifetimes (so IFA_F_PERMANENT is clear and the valid
// lifetime is not infinite), and without the kernel's SLAAC flags
// (IFA_F_TEMPORARY, IFA_F_STABLE_PRIVACY). A static /128 added with
// `ip addr add` without lifetimes is therefore ClassStatic and registrable,
// while one added with finite lifetimes looks like DHCPv6 and is not: list
// it in Include to register it. Anything else a site runs (a /64 from a
// DHCPv6 client that adds the on-link prefix length) goes in Exclude.
//
// Registrable (RFC 9686 §4.1 "Which addresses"): global scope, ULA and static
// included; never link-local, loopback, multicast, other non-global, DHCPv6,
// tentative, optimistic, DAD-failed or with a zero valid lifetime. Deprecated
// addresses (preferred lifetime 0) stay registrable.
//
// Optimistic (RFC 4429) addresses are not registrable until DAD completes:
// DAD has not finished, so the address may still turn out to belong to
// another node, and a registration would move the server's binding away from
// its rightful owner (RFC 9686 §4.3: "another client: move the binding"). The
// transition to preferred is reported as an AddrUpdated about a second later.
func Classify(a RawAddr, o ClassifyOptions) (Class, State, bool) {
	st := stateOf(a)
	ip := a.IP.Unmap()
	override := match(ip, o)

	var c Class
	switch {
	case ip.IsLoopback() || a.Proto == ProtoKernelLo:
		c = ClassLoopback
	case ip.IsMulticast():
		c = ClassMulticast
	case linkLocalPrefix.Contains(ip) || a.Proto == ProtoKernelLL:
		c = ClassLinkLocal
	case !ip.Is6() || a.IP.Is4In6() || ip.IsUnspecified() || siteLocalPrefix.Contains(ip):
		c = ClassOther
	case override != overrideInclude && isDHCPv6(a):
		c = ClassDHCPv6
	case ulaPrefix.Contains(ip):
		c = ClassULA
	case a.Flags&flagTemporary != 0:
		c = ClassTemporary
	case a.Flags&flagStablePrivacy != 0:
		c = ClassStablePrivacy
	case a.Flags&flagPermanent != 0 || a.Valid == Infinite:
		c = ClassStatic
	default:
		c = ClassGlobal
	}

	reg := false
	switch c {
	case ClassGlobal, ClassTemporary, ClassStablePrivacy, ClassULA, ClassStatic:
		reg = true
	}
	switch st {
	case StateTentative, StateOptimistic, StateDADFailed:
		reg = false
	}
	if a.Valid <= 0 || override == overrideExclude {
		reg = false
	}
	return c, st, reg
}

func isDHCPv6(a RawAddr) bool {
	return a.PrefixLen == 128 &&
		a.Proto == ProtoUnspec &&
		a.Flags&(flagPermanent|flagTemporary|flagStablePrivacy) == 0 &&
		a.Valid != Infinite
}

func stateOf(a RawAddr) State {
	switch {
	case a.Flags&flagDADFailed != 0:
		return StateDADFailed
	case a.Flags&flagOptimistic != 0:
		return StateOptimistic
	case a.Flags&flagTentative != 0:
		return StateTentative
	case a.Flags&flagDeprecated != 0 || a.Preferred <= 0:
		return StateDeprecated
	}
	return StatePreferred
}

type override int

const (
	overrideNone override = iota
	overrideInclude
	overrideExclude
)

func match(ip netip.Addr, o ClassifyOptions) override {
	best, res := -1, overrideNone
	for _, p := range o.Include {
		if p.Contains(ip) && p.Bits() > best {
			best, res = p.Bits(), overrideInclude
		}
	}
	for _, p := range o.Exclude {
		if p.Contains(ip) && p.Bits() >= best {
			best, res = p.Bits(), overrideExclude
		}
	}
	return res
}
