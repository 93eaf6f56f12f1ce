package refserver

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// leasequery answers LEASEQUERY (RFC 5007 §4.4) from the bindings. A
// QUERY_BY_CLIENTID with link-address 0::0 for a client with bindings on
// several links is answered with OPTION_LQ_CLIENT_LINK listing those links
// (RFC 5007 §4.1.2.5); the requestor then asks per link.
func (h *Handler) leasequery(b []byte, now time.Time, xid [3]byte, opts []rawOption, requestor netip.Addr, ev *Event) ([]byte, error) {
	// RFC 5007 §4.2.1: discard without Client ID, with a foreign Server ID, or without a query.
	cid, ok := findOne(opts, uint16(dhcpv6.OptionClientID))
	if !ok || len(cid.Data) == 0 {
		return nil, fmt.Errorf("%w: leasequery from %s", ErrNoClientID, requestor)
	}
	if sid, ok := findOne(opts, uint16(dhcpv6.OptionServerID)); ok && !bytes.Equal(sid.Data, h.cfg.ServerDUID) {
		return nil, fmt.Errorf("%w: leasequery for %x", ErrWrongServerID, sid.Data)
	}
	qo, ok := findOne(opts, uint16(dhcpv6.OptionLQQuery))
	if !ok {
		return nil, fmt.Errorf("%w: from %s", ErrNoQuery, requestor)
	}
	b = appendMsgHeader(b, dhcpv6.MessageTypeLeaseQueryReply, xid)
	b = appendOption(b, uint16(dhcpv6.OptionServerID), h.cfg.ServerDUID)
	b = appendOption(b, uint16(dhcpv6.OptionClientID), cid.Data)
	status := func(code uint16, text string) ([]byte, error) {
		ev.Status = code
		return appendStatus(b, code, text), nil
	}
	if !containsAddr(h.cfg.LeasequeryAllow, requestor) {
		return status(StatusNotAllowed, "requestor not allowed")
	}
	q, err := parseLQQuery(qo.Data)
	if err != nil {
		return status(StatusMalformedQuery, err.Error())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var found []*Binding
	switch q.Type {
	case QueryByAddress:
		o, ok := findOne(q.Options, uint16(dhcpv6.OptionIAAddr))
		if !ok {
			return status(StatusMalformedQuery, "QUERY_BY_ADDRESS without IA Address")
		}
		ia, err := parseIAAddress(o.Data)
		if err != nil {
			return status(StatusMalformedQuery, err.Error())
		}
		if !q.LinkAddr.IsUnspecified() && !h.knownLinkLocked(q.LinkAddr) {
			return status(StatusNotConfigured, "unknown link-address")
		}
		// RFC 5007 §4.1.2.5: with a link-address, the query is on that link.
		if bd := h.byAddr[ia.Addr]; bd != nil && !bd.expired(now) &&
			(q.LinkAddr.IsUnspecified() || h.onLinkLocked(bd, q.LinkAddr)) {
			// Return the client's data on that link: all its addresses there.
			for a := range h.byDUID[string(bd.DUID)].all {
				if ob := h.byAddr[a]; ob != nil && sameLink(ob, bd) && !ob.expired(now) {
					found = append(found, ob)
				}
			}
		}
	case QueryByClientID:
		o, ok := findOne(q.Options, uint16(dhcpv6.OptionClientID))
		if !ok || len(o.Data) == 0 {
			return status(StatusMalformedQuery, "QUERY_BY_CLIENTID without Client ID")
		}
		if !q.LinkAddr.IsUnspecified() && !h.knownLinkLocked(q.LinkAddr) {
			return status(StatusNotConfigured, "unknown link-address")
		}
		for a := range h.byDUID[string(o.Data)].all {
			bd := h.byAddr[a]
			if bd == nil || bd.expired(now) {
				continue
			}
			if !q.LinkAddr.IsUnspecified() && !h.onLinkLocked(bd, q.LinkAddr) {
				continue
			}
			found = append(found, bd)
		}
	default:
		return status(StatusUnknownQueryType, fmt.Sprintf("query-type %d", q.Type))
	}
	ev.Status = StatusSuccess
	groups := groupByLink(found)
	if q.Type == QueryByClientID && q.LinkAddr.IsUnspecified() && len(groups) > 1 {
		var links []byte
		for _, g := range groups {
			la := h.linkAddressLocked(g[0])
			links = append(links, la.AsSlice()...)
		}
		return appendOption(b, uint16(dhcpv6.OptionLQClientLink), links), nil
	}
	for _, group := range groups {
		b = appendOption(b, uint16(dhcpv6.OptionClientData), clientData(now, group))
	}
	return b, nil
}

// knownLinkLocked reports whether link-address identifies a link the server
// knows: a Prefixes key, inside a configured prefix, or a relay link of a binding.
func (h *Handler) knownLinkLocked(la netip.Addr) bool {
	if _, ok := h.cfg.Prefixes[la.String()]; ok {
		return true
	}
	for _, ps := range h.cfg.Prefixes {
		if containsAddr(ps, la) {
			return true
		}
	}
	for _, b := range h.byAddr {
		if b.LinkAddr == la {
			return true
		}
		if p, _ := la.Prefix(64); p.Contains(b.Addr) {
			return true
		}
	}
	return false
}

// linkAddressLocked returns an address that identifies b's link in a
// query: the relay's link-address, else the network address of the
// interface prefix that holds b's address (else of its /64).
func (h *Handler) linkAddressLocked(b *Binding) netip.Addr {
	if b.LinkAddr.IsValid() && !b.LinkAddr.IsUnspecified() {
		return b.LinkAddr
	}
	for _, p := range h.linkPrefixes(b.Iface, nil) {
		if p.Contains(b.Addr) {
			return p.Masked().Addr()
		}
	}
	p, _ := b.Addr.Prefix(64)
	return p.Addr()
}

// onLinkLocked reports whether b is on the link identified by la.
func (h *Handler) onLinkLocked(b *Binding, la netip.Addr) bool {
	if b.LinkAddr == la || h.linkAddressLocked(b) == la {
		return true
	}
	if ps, ok := h.cfg.Prefixes[la.String()]; ok {
		return containsAddr(ps, b.Addr)
	}
	p, _ := la.Prefix(64)
	return p.Contains(b.Addr)
}

func sameLink(a, b *Binding) bool { return a.Iface == b.Iface && a.LinkAddr == b.LinkAddr }

func groupByLink(bs []*Binding) [][]*Binding {
	slices.SortFunc(bs, func(a, b *Binding) int {
		if c := a.LinkAddr.Compare(b.LinkAddr); c != 0 {
			return c
		}
		if a.Iface != b.Iface {
			if a.Iface < b.Iface {
				return -1
			}
			return 1
		}
		return a.Addr.Compare(b.Addr)
	})
	var out [][]*Binding
	for i, b := range bs {
		if i == 0 || !sameLink(bs[i-1], b) {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], b)
	}
	return out
}

// clientData encodes OPTION_CLIENT_DATA: Client ID, one IA Address per
// address with the remaining lifetimes, and OPTION_CLT_TIME (RFC 5007 §4.1.2.2).
func clientData(now time.Time, bs []*Binding) []byte {
	var d []byte
	d = appendOption(d, uint16(dhcpv6.OptionClientID), bs[0].DUID)
	last := bs[0].Last
	for _, b := range bs {
		d = appendIAAddress(d, iaAddress{Addr: b.Addr, Preferred: remaining(now, b.Last, b.Preferred), Valid: remaining(now, b.Last, b.Valid)})
		if b.Last.After(last) {
			last = b.Last
		}
	}
	clt := max(0, now.Sub(last)/time.Second)
	return appendOption(d, uint16(dhcpv6.OptionCLTTime), binary.BigEndian.AppendUint32(nil, uint32(min(clt, infiniteLifetime))))
}

// remaining is a lifetime given at since, counted down to now; infinity stays.
func remaining(now, since time.Time, lt time.Duration) uint32 {
	secs := lt / time.Second
	if secs >= infiniteLifetime {
		return infiniteLifetime
	}
	left := lt - now.Sub(since)
	if left <= 0 {
		return 0
	}
	return uint32((left + time.Second - 1) / time.Second)
}
