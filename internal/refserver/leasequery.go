package refserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// leasequery answers LEASEQUERY (RFC 5007 §4.4) from the bindings. A
// QUERY_BY_CLIENTID with link-address 0::0 for a client with bindings on
// several links is answered with OPTION_LQ_CLIENT_LINK listing those links
// (RFC 5007 §4.1.2.5); the requestor then asks per link. An answer too large
// for one UDP message is replaced by status UnspecFail with TooLargeText:
// the requestor then asks again over TCP (Bulk Leasequery, RFC 5460).
func (h *Handler) leasequery(b []byte, now time.Time, xid [3]byte, opts []rawOption, requestor netip.Addr, ev *Event) ([]byte, error) {
	cid, q, err := h.checkLeasequery(opts, requestor)
	if err != nil {
		return nil, err
	}
	head := len(b)
	b = appendMsgHeader(b, dhcpv6.MessageTypeLeaseQueryReply, xid)
	b = appendOption(b, uint16(dhcpv6.OptionServerID), h.cfg.ServerDUID)
	b = appendOption(b, uint16(dhcpv6.OptionClientID), cid)
	res := h.runQuery(now, q, requestor, false)
	ev.Status = res.status
	if res.status != StatusSuccess {
		return appendStatus(b, res.status, res.text), nil
	}
	if len(res.links) > 0 {
		var links []byte
		for _, la := range res.links {
			links = append(links, la.AsSlice()...)
		}
		return appendOption(b, uint16(dhcpv6.OptionLQClientLink), links), nil
	}
	size := len(b) - head
	for _, c := range res.clients {
		size += 4 + clientDataLen(c)
	}
	if size > MaxUDPLeasequeryReply {
		ev.Status = StatusUnspecFail
		return appendStatus(b, StatusUnspecFail, fmt.Sprintf("%s: %d bytes", TooLargeText, size)), nil
	}
	for _, c := range res.clients {
		b = appendClientData(b, c)
	}
	return b, nil
}

// MaxUDPLeasequeryReply is the largest LEASEQUERY-REPLY sent over UDP:
// an IPv6 UDP payload is at most 65,527 octets, and a relayed requestor's
// Relay-Reply needs some room.
const MaxUDPLeasequeryReply = 60000

// TooLargeText starts the status message of a UDP LEASEQUERY-REPLY whose
// answer does not fit one UDP message; `addrreg-refserver query` then
// repeats the query over TCP (RFC 5460).
const TooLargeText = "answer too large for UDP, use Bulk Leasequery over TCP"

// checkLeasequery applies RFC 5007 §4.2.1's discard rules: no Client ID,
// a foreign Server ID, or no query. It returns the Client ID and the
// query; a query that does not parse comes back with Type 0.
func (h *Handler) checkLeasequery(opts []rawOption, requestor netip.Addr) ([]byte, lqQuery, error) {
	cid, ok := findOne(opts, uint16(dhcpv6.OptionClientID))
	if !ok || len(cid.Data) == 0 {
		return nil, lqQuery{}, fmt.Errorf("%w: leasequery from %s", ErrNoClientID, requestor)
	}
	if sid, ok := findOne(opts, uint16(dhcpv6.OptionServerID)); ok && !bytes.Equal(sid.Data, h.cfg.ServerDUID) {
		return nil, lqQuery{}, fmt.Errorf("%w: leasequery for %x", ErrWrongServerID, sid.Data)
	}
	qo, ok := findOne(opts, uint16(dhcpv6.OptionLQQuery))
	if !ok {
		return nil, lqQuery{}, fmt.Errorf("%w: from %s", ErrNoQuery, requestor)
	}
	q, err := parseLQQuery(qo.Data)
	if err != nil {
		q = lqQuery{err: err}
	}
	return cid.Data, q, nil
}

// lqClient is one OPTION_CLIENT_DATA to send: a client's addresses on one
// link, lifetimes already counted down.
type lqClient struct {
	duid  []byte
	addrs []LeaseAddr
	clt   uint32
}

// lqResult is what a query found: a status, or client data, or (UDP
// QUERY_BY_CLIENTID on several links) the links to ask about.
type lqResult struct {
	status  uint16
	text    string
	clients []lqClient
	links   []netip.Addr
}

// runQuery looks q up in the bindings. bulk allows the RFC 5460 query types
// and lists a client on several links in full instead of by its links.
func (h *Handler) runQuery(now time.Time, q lqQuery, requestor netip.Addr, bulk bool) lqResult {
	fail := func(code uint16, text string) lqResult { return lqResult{status: code, text: text} }
	if !containsAddr(h.cfg.LeasequeryAllow, requestor) {
		return fail(StatusNotAllowed, "requestor not allowed")
	}
	if q.err != nil {
		return fail(StatusMalformedQuery, q.err.Error())
	}
	src := h.source()
	ctx, cancel := context.WithTimeout(context.Background(), leasequeryTimeout)
	defer cancel()
	dbFail := func(err error) lqResult {
		return fail(StatusUnspecFail, "database unavailable: "+err.Error())
	}
	if !q.LinkAddr.IsUnspecified() &&
		(q.Type == QueryByAddress || q.Type == QueryByClientID || (bulk && q.Type == QueryByLinkAddress)) {
		known, err := h.knownLink(ctx, src, q.LinkAddr)
		if err != nil {
			return dbFail(err)
		}
		if !known {
			return fail(StatusNotConfigured, "unknown link-address")
		}
	}
	var found []*Binding
	switch q.Type {
	case QueryByAddress:
		o, ok := findOne(q.Options, uint16(dhcpv6.OptionIAAddr))
		if !ok {
			return fail(StatusMalformedQuery, "QUERY_BY_ADDRESS without IA Address")
		}
		ia, err := parseIAAddress(o.Data)
		if err != nil {
			return fail(StatusMalformedQuery, err.Error())
		}
		// RFC 5007 §4.1.2.5: with a link-address, the query is on that link.
		bd, ok, err := src.byAddr(ctx, ia.Addr)
		if err != nil {
			return dbFail(err)
		}
		if ok && !bd.expired(now) && (q.LinkAddr.IsUnspecified() || h.onLink(&bd, q.LinkAddr)) {
			// Return the client's data on that link: all its addresses there.
			bs, err := src.byDUID(ctx, bd.DUID)
			if err != nil {
				return dbFail(err)
			}
			for _, ob := range bs {
				if sameLink(&ob, &bd) && !ob.expired(now) {
					found = append(found, &ob)
				}
			}
		}
	case QueryByClientID:
		o, ok := findOne(q.Options, uint16(dhcpv6.OptionClientID))
		if !ok || len(o.Data) == 0 {
			return fail(StatusMalformedQuery, "QUERY_BY_CLIENTID without Client ID")
		}
		bs, err := src.byDUID(ctx, o.Data)
		if err != nil {
			return dbFail(err)
		}
		for _, bd := range bs {
			if bd.expired(now) {
				continue
			}
			if !q.LinkAddr.IsUnspecified() && !h.onLink(&bd, q.LinkAddr) {
				continue
			}
			found = append(found, &bd)
		}
	case QueryByLinkAddress:
		if !bulk {
			return fail(StatusUnknownQueryType, "QUERY_BY_LINK_ADDRESS is for Bulk Leasequery over TCP (RFC 5460)")
		}
		// RFC 5460 §6.1: every binding on the link; 0::0 here asks for
		// every binding the server holds.
		bs, err := src.all(ctx)
		if err != nil {
			return dbFail(err)
		}
		for _, bd := range bs {
			if !bd.expired(now) && (q.LinkAddr.IsUnspecified() || h.onLink(&bd, q.LinkAddr)) {
				found = append(found, &bd)
			}
		}
	default:
		return fail(StatusUnknownQueryType, fmt.Sprintf("query-type %d", q.Type))
	}
	groups := groupByLink(found)
	if !bulk && q.Type == QueryByClientID && q.LinkAddr.IsUnspecified() && len(groups) > 1 {
		res := lqResult{}
		for _, g := range groups {
			res.links = append(res.links, h.linkAddress(g[0]))
		}
		return res
	}
	res := lqResult{clients: make([]lqClient, 0, len(groups))}
	for _, g := range groups {
		c := lqClient{duid: g[0].DUID, addrs: make([]LeaseAddr, 0, len(g))}
		last := g[0].Last
		for _, b := range g {
			c.addrs = append(c.addrs, LeaseAddr{Addr: b.Addr, Preferred: remaining(now, b.Last, b.Preferred), Valid: remaining(now, b.Last, b.Valid)})
			if b.Last.After(last) {
				last = b.Last
			}
		}
		c.clt = uint32(min(max(0, now.Sub(last)/time.Second), infiniteLifetime))
		res.clients = append(res.clients, c)
	}
	return res
}

// knownLink reports whether link-address identifies a link the server
// knows: a Prefixes key, inside a configured prefix, or a relay link of a
// binding (or the /64 of one).
func (h *Handler) knownLink(ctx context.Context, src bindingSource, la netip.Addr) (bool, error) {
	if _, ok := h.cfg.Prefixes[la.String()]; ok {
		return true, nil
	}
	for _, ps := range h.cfg.Prefixes {
		if containsAddr(ps, la) {
			return true, nil
		}
	}
	return src.linkKnown(ctx, la)
}

// leasequeryTimeout bounds a leasequery's reads from the database.
const leasequeryTimeout = 2 * time.Second

// source is where leasequeries read bindings: the database when the
// server set one (HandlerConfig.Source), else the Handler's own table.
func (h *Handler) source() bindingSource {
	if h.cfg.Source != nil {
		return h.cfg.Source
	}
	return memSource{h}
}

// memSource reads the Handler's table (a Handler without a server).
type memSource struct{ h *Handler }

func (m memSource) byAddr(_ context.Context, a netip.Addr) (Binding, bool, error) {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	if r := m.h.tab.lookup(a); r != 0 {
		return m.h.tab.get(r), true, nil
	}
	return Binding{}, false, nil
}

func (m memSource) byDUID(_ context.Context, duid []byte) ([]Binding, error) {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	var out []Binding
	for r := range m.h.tab.ofDUID(duid) {
		out = append(out, m.h.tab.get(r))
	}
	return out, nil
}

func (m memSource) all(context.Context) ([]Binding, error) { return m.h.Bindings(), nil }

func (m memSource) linkKnown(_ context.Context, la netip.Addr) (bool, error) {
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	p, _ := la.Prefix(64)
	for r := range m.h.tab.all {
		if m.h.tab.linkAddr(r) == la || p.Contains(m.h.tab.addr(r)) {
			return true, nil
		}
	}
	return false, nil
}

// linkAddress returns an address that identifies b's link in a
// query: the relay's link-address, else the network address of the
// interface prefix that holds b's address (else of its /64).
func (h *Handler) linkAddress(b *Binding) netip.Addr {
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

// onLink reports whether b is on the link identified by la.
func (h *Handler) onLink(b *Binding, la netip.Addr) bool {
	if b.LinkAddr == la || h.linkAddress(b) == la {
		return true
	}
	if ps, ok := h.cfg.Prefixes[la.String()]; ok {
		return containsAddr(ps, b.Addr)
	}
	p, _ := la.Prefix(64)
	return p.Contains(b.Addr)
}

func sameLink(a, b *Binding) bool { return a.Iface == b.Iface && a.LinkAddr == b.LinkAddr }

// sameClientLink: one OPTION_CLIENT_DATA holds one client's addresses on one link.
func sameClientLink(a, b *Binding) bool { return sameLink(a, b) && bytes.Equal(a.DUID, b.DUID) }

// groupByLink sorts bs by link, client and address and cuts it into one
// group per client and link.
func groupByLink(bs []*Binding) [][]*Binding {
	slices.SortFunc(bs, func(a, b *Binding) int {
		if c := a.LinkAddr.Compare(b.LinkAddr); c != 0 {
			return c
		}
		if c := strings.Compare(a.Iface, b.Iface); c != 0 {
			return c
		}
		if c := bytes.Compare(a.DUID, b.DUID); c != 0 {
			return c
		}
		return a.Addr.Compare(b.Addr)
	})
	var out [][]*Binding
	for i, b := range bs {
		if i == 0 || !sameClientLink(bs[i-1], b) {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], b)
	}
	return out
}

// clientDataLen is the length of c's OPTION_CLIENT_DATA payload.
func clientDataLen(c lqClient) int { return 4 + len(c.duid) + len(c.addrs)*(4+24) + 4 + 4 }

// appendClientData appends OPTION_CLIENT_DATA: Client ID, one IA Address per
// address with the remaining lifetimes, and OPTION_CLT_TIME (RFC 5007
// §4.1.2.2). c must fit one option (see splitClient).
func appendClientData(b []byte, c lqClient) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(dhcpv6.OptionClientData))
	b = binary.BigEndian.AppendUint16(b, uint16(clientDataLen(c)))
	b = appendOption(b, uint16(dhcpv6.OptionClientID), c.duid)
	for _, a := range c.addrs {
		b = appendIAAddress(b, iaAddress(a))
	}
	return appendOption(b, uint16(dhcpv6.OptionCLTTime), binary.BigEndian.AppendUint32(nil, c.clt))
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
