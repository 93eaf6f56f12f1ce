package netmon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Router Advertisements read from the wire (Options.WatchRAs), the pure
// half: validation, and the per-link table of routers whose M and O flags
// count. A raw socket gets every RA the link carries, forged ones included,
// so everything RFC 4861 §6.1.2 asks a host to check is checked here, each
// router counts only within its Router Lifetime (or, for a router that is
// not a default router, Router Lifetime 0, for DefaultRAFlagsHold), and
// what is kept per link is bounded (Options.MaxRouters).

// DefaultMaxRouters bounds the routers remembered per link from RAs on the
// wire. RFC 4861 leaves the Default Router List's size to the host; a link
// with more than a handful of routers is rare, one with 16 is a flood.
const DefaultMaxRouters = 16

// DefaultRAFlagsHold is how long the M and O flags of an RA with Router
// Lifetime 0 count. Such a router is not a default router, but RFC 4861
// §4.2 says the Router Lifetime "does not apply to information contained
// in other message fields or options": the flags are as meant as any
// other router's (radvd's AdvDefaultLifetime 0 is a common setting, and
// the kernel's own IF_RA_MANAGED/OTHERCONF keep them). They last as long
// as the longest interval between a router's RAs (MaxRtrAdvInterval ≤ 1800
// s, RFC 4861 §6.2.1), so a router that stops advertising stops counting,
// and the router's next RA renews or clears them.
const DefaultRAFlagsHold = 1800 * time.Second

// raInfo is what netmon uses of an RA.
type raInfo struct {
	managed, other bool
	lifetime       time.Duration // Router Lifetime; 0: not (or no longer) a default router
}

// Why an RA read from the wire was not used: the "reason" of the log line.
var (
	errRANotLinkLocal = errors.New("source not link-local")
	errRAHopLimit     = errors.New("hop limit not 255")
	errRAMalformed    = errors.New("malformed RA")
	errRATableFull    = errors.New("too many routers")
	errRANoLink       = errors.New("unknown interface")
)

const (
	icmpRouterAdvertisement = 134
	raHeaderLen             = 16 // type, code, checksum, hop limit, flags, lifetime, reachable, retrans
	raFlagManaged           = 0x80
	raFlagOther             = 0x40
)

// checkRASource applies RFC 4861 §6.1.2's checks of the IP header: the
// source is link-local and the hop limit is 255, i.e. the RA was not
// forwarded by a router from off the link. hopLimit < 0: not known (no
// control message), which fails.
func checkRASource(src netip.Addr, hopLimit int) error {
	if !src.Is6() || src.Is4In6() || !src.IsLinkLocalUnicast() {
		return errRANotLinkLocal
	}
	if hopLimit != 255 {
		return errRAHopLimit
	}
	return nil
}

// parseRA decodes an ICMPv6 message (from its type octet) as an RA and
// applies RFC 4861 §6.1.2's checks of the message: ICMP code 0, ICMP length
// 16 octets or more, every option of non-zero length and none running past
// the end. The kernel has verified the checksum (it does for raw ICMPv6
// sockets). Options are not decoded: netmon needs only the flags and the
// Router Lifetime. It does not allocate.
func parseRA(b []byte) (raInfo, error) {
	if len(b) < raHeaderLen {
		return raInfo{}, fmt.Errorf("%w: %d octets", errRAMalformed, len(b))
	}
	if b[0] != icmpRouterAdvertisement || b[1] != 0 {
		return raInfo{}, fmt.Errorf("%w: ICMPv6 type %d code %d", errRAMalformed, b[0], b[1])
	}
	for o := b[raHeaderLen:]; len(o) > 0; {
		if len(o) < 2 || o[1] == 0 || int(o[1])*8 > len(o) {
			return raInfo{}, fmt.Errorf("%w: option at octet %d", errRAMalformed, len(b)-len(o))
		}
		o = o[int(o[1])*8:]
	}
	return raInfo{
		managed:  b[5]&raFlagManaged != 0,
		other:    b[5]&raFlagOther != 0,
		lifetime: time.Duration(binary.BigEndian.Uint16(b[6:8])) * time.Second,
	}, nil
}

// wireRouter is what one router's last RA said, and until when it counts.
type wireRouter struct {
	managed, other bool
	expires        time.Time
}

// routers is one link's table of routers seen on the wire, at most the limit.
type routers map[netip.Addr]wireRouter

// observe records ra from src at now. A router already known is always
// updated; a new one is refused with errRATableFull while the table holds limit
// (after forgetting the expired ones): a flood of forged sources cannot push
// out the routers already there. A router counts for its Router Lifetime;
// with lifetime 0 (not a default router, RFC 4861 §6.3.4: as a default
// router it times out at once) its flags still count, for hold (see
// DefaultRAFlagsHold). It returns the router's new expiry.
func (r routers) observe(src netip.Addr, ra raInfo, now time.Time, limit int, hold time.Duration) (time.Time, error) {
	if _, known := r[src]; !known && len(r) >= limit {
		r.expire(now)
		if len(r) >= limit {
			return time.Time{}, errRATableFull
		}
	}
	life := ra.lifetime
	if life == 0 {
		life = hold
	}
	exp := now.Add(life)
	r[src] = wireRouter{managed: ra.managed, other: ra.other, expires: exp}
	return exp, nil
}

// expire forgets the routers whose lifetime has run out by now. It reports
// whether any was forgotten and the earliest expiry left (zero if none).
func (r routers) expire(now time.Time) (changed bool, next time.Time) {
	for src, w := range r {
		if !w.expires.After(now) {
			delete(r, src)
			changed = true
			continue
		}
		if next.IsZero() || w.expires.Before(next) {
			next = w.expires
		}
	}
	return changed, next
}

// flags: M (O) holds while some router whose last RA set it is within its
// lifetime.
func (r routers) flags() (managed, other bool) {
	for _, w := range r {
		managed = managed || w.managed
		other = other || w.other
	}
	return managed, other
}
