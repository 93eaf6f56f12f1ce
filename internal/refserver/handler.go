package refserver

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// HandlerConfig is what the pure Handler needs.
type HandlerConfig struct {
	ServerDUID []byte
	AddrReg    bool
	// Interfaces accepted for unrelayed messages; empty accepts any.
	Interfaces []string
	Prefixes   map[string][]netip.Prefix
	// OnLink returns the prefixes of an interface without a Prefixes entry
	// (the server reads the interface's own global addresses).
	OnLink                     func(iface string) []netip.Prefix
	LeasequeryAllow            []netip.Prefix // nil: ::1 only
	RatePerSource, RatePerDUID float64
	Burst                      int
	// MaxBindingsPerDUID: 0 is DefaultMaxBindingsPerDUID.
	MaxBindingsPerDUID int
	// Source is where leasequeries read the bindings (the server's
	// database, so that every server of a site answers for all); nil: the
	// Handler's own table.
	Source bindingSource
}

// Handler is the server's message logic without sockets or disk: it owns
// the in-memory bindings, the expiry heap and the rate limiters. It is safe
// for concurrent use.
type Handler struct {
	cfg    HandlerConfig
	ifaces map[string]bool
	// relayKeys are the Prefixes keys that are relay link-addresses,
	// parsed once, and the keys in order for the containment search.
	relayKeys  map[netip.Addr][]netip.Prefix
	sortedKeys []string

	mu      sync.Mutex
	tab     *table // the bindings (table.go)
	exp     expHeap
	srcLim  limiter[netip.Addr]
	duidLim limiter[string]
}

// NewHandler returns a Handler with no bindings.
func NewHandler(cfg HandlerConfig) *Handler {
	h := &Handler{
		cfg:     cfg,
		tab:     newTable(),
		srcLim:  newLimiter[netip.Addr](cfg.RatePerSource, cfg.Burst),
		duidLim: newLimiter[string](cfg.RatePerDUID, cfg.Burst),
	}
	if len(cfg.Interfaces) > 0 {
		h.ifaces = make(map[string]bool)
		for _, i := range cfg.Interfaces {
			h.ifaces[i] = true
		}
	}
	if h.cfg.MaxBindingsPerDUID <= 0 {
		h.cfg.MaxBindingsPerDUID = DefaultMaxBindingsPerDUID
	}
	if h.cfg.LeasequeryAllow == nil {
		h.cfg.LeasequeryAllow = []netip.Prefix{netip.MustParsePrefix("::1/128")}
	}
	h.relayKeys = make(map[netip.Addr][]netip.Prefix)
	for k, ps := range cfg.Prefixes {
		if a, err := netip.ParseAddr(k); err == nil && a.String() == k {
			h.relayKeys[a] = ps
		}
		h.sortedKeys = append(h.sortedKeys, k)
	}
	slices.Sort(h.sortedKeys) // deterministic when several entries contain a link-address
	return h
}

// Handle processes one datagram. On success it returns the reply to send
// (nil if none) and where to send it; a reply for an unrelayed client goes out
// the receiving interface. On a drop, reason wraps one of the Err* Reasons and
// event is an EventReject with what is known of the sender.
func (h *Handler) Handle(now time.Time, pkt Packet) (reply []byte, dst netip.AddrPort, event Event, reason error) {
	return h.HandleInto(nil, now, pkt)
}

// HandleInto is Handle building the reply in buf (from buf[:0]), so that a
// server can reuse its reply buffers; the reply aliases buf when it fits.
// Nothing of pkt.Data is retained: the event holds copies.
func (h *Handler) HandleInto(buf []byte, now time.Time, pkt Packet) (reply []byte, dst netip.AddrPort, event Event, reason error) {
	event.Time = now
	reply, dst, event, reason = h.handle(buf, now, pkt, &event)
	if reason != nil {
		event.Kind = EventReject
		event.Reason = ReasonName(reason)
		reply, dst = nil, netip.AddrPort{}
	}
	return reply, dst, event, reason
}

func (h *Handler) handle(buf []byte, now time.Time, pkt Packet, ev *Event) ([]byte, netip.AddrPort, Event, error) {
	fail := func(err error) ([]byte, netip.AddrPort, Event, error) { return nil, netip.AddrPort{}, *ev, err }
	ev.Binding.Iface = pkt.Iface
	if len(pkt.Data) > MaxMessageSize {
		return fail(fmt.Errorf("%w: %d bytes", ErrOversized, len(pkt.Data)))
	}
	var chainBuf [HopCountLimit]relayLevel
	chain, inner, err := unwrapRelaysInto(&chainBuf, pkt.Data)
	if err != nil {
		return fail(err)
	}
	ev.Relayed = len(chain) > 0
	src := pkt.Src.Addr().WithZone("").Unmap()
	if ev.Relayed {
		in := chain[len(chain)-1]
		src = in.PeerAddr
		ev.Binding.LinkAddr = in.LinkAddr
		if len(in.LinkLayer) > 2 {
			// A copy: the event outlives the read buffer (it is stored
			// and logged after the next packet has been read into it).
			ev.Binding.LinkLayer = append(net.HardwareAddr(nil), in.LinkLayer[2:]...)
		}
	}
	ev.Binding.Addr = src
	if !h.srcLim.allow(src, now) {
		return fail(fmt.Errorf("%w: %s", ErrRateSource, src))
	}
	mt := dhcpv6.MessageType(inner[0])
	switch mt {
	case dhcpv6.MessageTypeAddrRegInform, dhcpv6.MessageTypeInformationRequest, dhcpv6.MessageTypeLeaseQuery:
	case dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeConfirm,
		dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind, dhcpv6.MessageTypeRelease,
		dhcpv6.MessageTypeDecline:
		return fail(fmt.Errorf("%w: %s (address assignment is not served)", ErrUnsupported, mt))
	default:
		return fail(fmt.Errorf("%w: %s", ErrWrongType, mt))
	}
	// Relayed or not, a message must arrive on an interface the server
	// serves: a Relay-Forward from anywhere else could claim any link.
	if mt != dhcpv6.MessageTypeLeaseQuery && h.ifaces != nil && !h.ifaces[pkt.Iface] {
		return fail(fmt.Errorf("%w: %s received on %q", ErrUnknownInterface, mt, pkt.Iface))
	}
	var optBuf [16]rawOption
	opts, err := appendOptions(optBuf[:0], inner[msgHeaderLen:])
	if err != nil {
		return fail(err)
	}
	xid := [3]byte(inner[1:4])
	// The full decode validates every option it knows; a plain INFORM
	// (Client ID and IA Address only, the common case) is checked as that
	// decode would check it, without its allocations.
	var msg *dhcpv6.Message
	if mt != dhcpv6.MessageTypeAddrRegInform || !plainInform(opts) {
		if msg, err = dhcpv6.MessageFromBytes(inner); err != nil {
			return fail(fmt.Errorf("%w: %s: %w", ErrMalformed, mt, err))
		}
	}
	if o, ok := findOne(opts, uint16(dhcpv6.OptionClientID)); ok {
		// RFC 8415 §11.1: a DUID is at most 130 octets (type + 128).
		if len(o.Data) > maxDUIDLen {
			return fail(fmt.Errorf("%w: %d-octet Client ID", ErrMalformed, len(o.Data)))
		}
		ev.Binding.DUID = append([]byte(nil), o.Data...)
	}
	// The reply is built after room for its Relay-Reply levels.
	head := relayHeadroom(chain)
	out := slices.Grow(buf[:0], head+128)[:head]
	var dst netip.AddrPort
	switch mt {
	case dhcpv6.MessageTypeAddrRegInform:
		if !h.cfg.AddrReg {
			// Registration is off: the server behaves as one that does
			// not support it and drops the message.
			err = ErrRegistrationOff
			break
		}
		out, dst, err = h.inform(out, now, pkt, chain, xid, msg, opts, src, ev)
	case dhcpv6.MessageTypeInformationRequest:
		out, err = h.infoRequest(out, msg, opts)
		ev.Kind, dst = EventInfoReply, pkt.Src
	case dhcpv6.MessageTypeLeaseQuery:
		// The allow list is checked against the packet's own source: a
		// peer-address inside a Relay-Forward is the sender's to choose.
		out, err = h.leasequery(out, now, xid, opts, pkt.Src.Addr().WithZone("").Unmap(), ev)
		ev.Kind, dst = EventLeasequery, pkt.Src
	}
	if err != nil {
		return fail(err)
	}
	if ev.Relayed {
		fillRelayReply(out, chain)
		dst = pkt.Src
	}
	return out, dst, *ev, nil
}

// plainInform reports whether opts hold only a Client ID and an IA Address
// without options of its own, each as dhcpv6.MessageFromBytes would accept
// it (a DUID its DUIDFromBytes decodes; a 24-byte IA Address).
func plainInform(opts []rawOption) bool {
	for _, o := range opts {
		switch dhcpv6.OptionCode(o.Code) {
		case dhcpv6.OptionClientID:
			if !decodableDUID(o.Data) {
				return false
			}
		case dhcpv6.OptionIAAddr:
			if len(o.Data) != 24 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// decodableDUID mirrors dhcpv6.DUIDFromBytes's checks (RFC 8415 §11): a
// type, then at least the fixed fields of LLT (2+4), EN (4) and LL (2), and
// exactly 16 octets of DUID-UUID (RFC 6355).
func decodableDUID(d []byte) bool {
	if len(d) < 2 {
		return false
	}
	switch binary.BigEndian.Uint16(d) {
	case 1:
		return len(d) >= 8
	case 2:
		return len(d) >= 6
	case 3:
		return len(d) >= 4
	case 4:
		return len(d) == 18
	}
	return true
}

// maxDUIDLen is RFC 8415 §11.1's limit: 2 octets of type, 128 of data.
const maxDUIDLen = 130

// DefaultMaxBindingsPerDUID bounds what one client may hold unless
// configured otherwise (RFC 9686 §8), so that one host cannot fill the
// server's memory and disk. A client with more bindings than one UDP
// LEASEQUERY-REPLY holds is listed by Bulk Leasequery (RFC 5460).
const DefaultMaxBindingsPerDUID = 1024

// inform handles ADDR-REG-INFORM (RFC 9686 §4.2.1).
// msg is the decoded message, or nil for a plainInform. The reply is
// appended to b.
func (h *Handler) inform(b []byte, now time.Time, pkt Packet, chain []relayLevel, xid [3]byte, msg *dhcpv6.Message, opts []rawOption, src netip.Addr, ev *Event) ([]byte, netip.AddrPort, error) {
	none := netip.AddrPort{}
	cid, ok := findOne(opts, uint16(dhcpv6.OptionClientID))
	if !ok || len(cid.Data) == 0 {
		return nil, none, fmt.Errorf("%w: from %s", ErrNoClientID, src)
	}
	if _, ok := findOne(opts, uint16(dhcpv6.OptionServerID)); ok {
		return nil, none, fmt.Errorf("%w: from %s", ErrHasServerID, src)
	}
	switch n := countOptions(opts, uint16(dhcpv6.OptionIAAddr)); n {
	case 0:
		return nil, none, fmt.Errorf("%w: from %s", ErrNoIAAddress, src)
	case 1:
	default:
		return nil, none, fmt.Errorf("%w: %d from %s", ErrMultipleIAAddress, n, src)
	}
	iao, _ := findOne(opts, uint16(dhcpv6.OptionIAAddr))
	ia, err := parseIAAddress(iao.Data)
	if err != nil {
		return nil, none, err
	}
	ev.Binding.Preferred = time.Duration(ia.Preferred) * time.Second
	ev.Binding.Valid = time.Duration(ia.Valid) * time.Second
	if _, ok := findOne(opts, uint16(dhcpv6.OptionORO)); ok {
		return nil, none, fmt.Errorf("%w: from %s", ErrHasORO, src)
	}
	if ia.Addr != src {
		ev.Binding.Addr = ia.Addr
		return nil, none, fmt.Errorf("%w: IA Address %s, source %s", ErrAddressMismatch, ia.Addr, src)
	}
	if !ia.Addr.IsGlobalUnicast() || ia.Addr.Is4In6() {
		return nil, none, fmt.Errorf("%w: %s", ErrNotGlobal, ia.Addr)
	}
	if ia.Preferred > ia.Valid {
		return nil, none, fmt.Errorf("%w: preferred %d > valid %d", ErrBadLifetimes, ia.Preferred, ia.Valid)
	}
	if pfx := h.linkPrefixes(pkt.Iface, chain); !containsAddr(pfx, ia.Addr) {
		return nil, none, fmt.Errorf("%w: %s not in %v", ErrNotOnLink, ia.Addr, pfx)
	}
	if h.duidLim.rate > 0 && !h.duidLim.allow(string(cid.Data), now) {
		return nil, none, fmt.Errorf("%w: %x", ErrRateDUID, cid.Data)
	}
	if msg != nil {
		if f := msg.Options.FQDN(); f != nil && f.DomainName != nil {
			ev.Binding.FQDN = strings.Join(f.DomainName.Labels, ",")
		}
	}
	if err := h.update(now, ia, ev); err != nil {
		return nil, none, err
	}

	// RFC 9686 §4.3: same transaction ID, the IA Address option identical
	// to the one received. Client and Server ID too, as Kea does.
	b = appendMsgHeader(b, dhcpv6.MessageTypeAddrRegReply, xid)
	b = appendOption(b, uint16(dhcpv6.OptionClientID), cid.Data)
	b = appendOption(b, uint16(dhcpv6.OptionServerID), h.cfg.ServerDUID)
	b = appendOption(b, uint16(dhcpv6.OptionIAAddr), iao.Data)
	return b, netip.AddrPortFrom(ia.Addr, 546), nil
}

// update applies a valid registration to the bindings and fills ev.
func (h *Handler) update(now time.Time, ia iaAddress, ev *Event) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	nb := ev.Binding
	nb.First, nb.Last = now, now
	if ia.Valid != infiniteLifetime {
		nb.Expires = now.Add(nb.Valid)
	}
	old := h.tab.lookup(ia.Addr)
	if ia.Valid != 0 && (old == 0 || !h.tab.sameDUID(old, nb.DUID)) && h.tab.count(nb.DUID) >= h.cfg.MaxBindingsPerDUID {
		return fmt.Errorf("%w: %x holds %d", ErrTooManyBindings, nb.DUID, h.cfg.MaxBindingsPerDUID)
	}
	switch {
	case ia.Valid == 0: // RFC 9686 §4.2.1: valid lifetime 0 is an expired binding
		ev.Kind = EventDeregister
		if old != 0 {
			removed := h.tab.get(old)
			h.tab.remove(old)
			// Log what the client said: zero lifetimes, now.
			removed.Expires, removed.Last = now, now
			removed.Preferred, removed.Valid = 0, 0
			ev.Binding = removed
			if !bytes.Equal(removed.DUID, nb.DUID) {
				ev.PrevDUID = removed.DUID
				ev.Binding.DUID = nb.DUID
			}
		} else {
			ev.Binding = nb
		}
		return nil
	case old == 0:
		ev.Kind = EventRegister
	case h.tab.sameDUID(old, nb.DUID):
		ev.Kind = EventRefresh
		nb.First = fromUnixNano(h.tab.slot(old).first)
	default:
		ev.Kind = EventMove
		ev.PrevDUID = bytes.Clone(h.tab.duidBytes(h.tab.slot(old).duid))
	}
	if ev.Kind == EventRefresh {
		// Same client, same address: update in place, nothing to allocate.
		h.tab.set(old, &nb)
		h.pushExpiry(&nb)
		ev.Binding = nb
		return nil
	}
	if old != 0 {
		h.tab.remove(old)
	}
	h.insert(&nb)
	ev.Binding = nb
	return nil
}

func (h *Handler) insert(b *Binding) {
	h.tab.insert(b)
	h.pushExpiry(b)
}

// pushExpiry queues b's expiry; the entries a refresh leaves behind are
// skipped when popped, and compacted away when they pile up.
func (h *Handler) pushExpiry(b *Binding) {
	if !b.Expires.IsZero() {
		h.exp.push(expEntry{at: b.Expires.UnixNano(), addr: b.Addr.As16()})
		if h.exp.len() > 2*h.tab.len()+1024 {
			h.compactHeap()
		}
	}
}

// compactHeap drops the stale entries refreshes leave behind.
func (h *Handler) compactHeap() {
	h.exp.reset()
	for r := range h.tab.all {
		if s := h.tab.slot(r); s.expires != 0 {
			h.exp.push(expEntry{at: s.expires, addr: s.addr})
		}
	}
}

// live returns the slot e stands for, or 0 when it was refreshed (a later
// expiry) or removed since.
func (h *Handler) live(e expEntry) uint32 {
	if r := h.tab.byAddr[e.addr]; r != 0 && h.tab.expires(r) == e.at {
		return r
	}
	return 0
}

// infoRequest answers Information-Request (RFC 8415 §18.3.6) with option
// 148 when asked for and enabled (RFC 9686 §4.1).
func (h *Handler) infoRequest(b []byte, msg *dhcpv6.Message, opts []rawOption) ([]byte, error) {
	if sid, ok := findOne(opts, uint16(dhcpv6.OptionServerID)); ok && !bytes.Equal(sid.Data, h.cfg.ServerDUID) {
		return nil, fmt.Errorf("%w: %x", ErrWrongServerID, sid.Data)
	}
	for _, c := range []dhcpv6.OptionCode{dhcpv6.OptionIANA, dhcpv6.OptionIATA, dhcpv6.OptionIAPD} {
		if _, ok := findOne(opts, uint16(c)); ok {
			return nil, fmt.Errorf("%w: Information-Request with %s", ErrHasIA, c)
		}
	}
	b = appendMsgHeader(b, dhcpv6.MessageTypeReply, msg.TransactionID)
	b = appendOption(b, uint16(dhcpv6.OptionServerID), h.cfg.ServerDUID)
	if cid, ok := findOne(opts, uint16(dhcpv6.OptionClientID)); ok {
		b = appendOption(b, uint16(dhcpv6.OptionClientID), cid.Data)
	}
	if h.cfg.AddrReg && msg.IsOptionRequested(dhcpv6.OptionAddrRegEnable) {
		b = appendOption(b, uint16(dhcpv6.OptionAddrRegEnable), nil)
	}
	return b, nil
}

// linkPrefixes returns the prefixes appropriate to the link a message came
// from: the interface's for unrelayed ones, the innermost relay
// link-address's for relayed ones.
func (h *Handler) linkPrefixes(iface string, chain []relayLevel) []netip.Prefix {
	if len(chain) == 0 {
		if p, ok := h.cfg.Prefixes[iface]; ok {
			return p
		}
		if h.cfg.OnLink != nil {
			return h.cfg.OnLink(iface)
		}
		return nil
	}
	la := chain[len(chain)-1].LinkAddr
	if p, ok := h.relayKeys[la]; ok {
		return p
	}
	if la.IsUnspecified() {
		return nil
	}
	for _, k := range h.sortedKeys {
		if containsAddr(h.cfg.Prefixes[k], la) {
			return h.cfg.Prefixes[k]
		}
	}
	// A link the configuration does not know: nothing is appropriate to
	// it, or a forged Relay-Forward could register (or move) any address.
	return nil
}

func containsAddr(pfx []netip.Prefix, a netip.Addr) bool {
	for _, p := range pfx {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Expire removes the bindings whose valid lifetime has run out at now.
func (h *Handler) Expire(now time.Time) []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var evs []Event
	for t := now.UnixNano(); h.exp.len() > 0 && h.exp.top().at <= t; {
		r := h.live(h.exp.pop())
		if r == 0 {
			continue // refreshed or removed since
		}
		b := h.tab.get(r)
		h.tab.remove(r)
		evs = append(evs, Event{Kind: EventExpire, Binding: b, Time: now})
	}
	return evs
}

// NextExpiry returns when the earliest binding expires.
func (h *Handler) NextExpiry() (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.exp.len() > 0 {
		if e := h.exp.top(); h.live(e) != 0 {
			return time.Unix(0, e.at), true
		}
		h.exp.pop()
	}
	return time.Time{}, false
}

// Load installs bindings read from the database; the ones already expired at
// now are not installed but returned as expire events.
func (h *Handler) Load(now time.Time, bs []Binding) []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var evs []Event
	for _, b := range bs {
		if b.expired(now) {
			evs = append(evs, Event{Kind: EventExpire, Binding: b, Time: now})
			continue
		}
		if old := h.tab.lookup(b.Addr); old != 0 {
			h.tab.remove(old)
		}
		h.insert(&b)
	}
	return evs
}

// Len returns how many bindings there are.
func (h *Handler) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tab.len()
}

// Bindings returns a snapshot of the bindings, ordered by address.
func (h *Handler) Bindings() []Binding {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Binding, 0, h.tab.len())
	for r := range h.tab.all {
		out = append(out, h.tab.get(r))
	}
	slices.SortFunc(out, func(a, b Binding) int { return a.Addr.Compare(b.Addr) })
	return out
}
