package shield

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// Port is one interface of a Switch.
type Port struct {
	Name string
	// Trusted ports may receive DHCPv6-server messages (RFC 7610 §4): a
	// DHCPv6 server or relay is connected there.
	Trusted bool
}

// SwitchConfig configures a Switch.
type SwitchConfig struct {
	Ports  []Port
	Shield Config
	// Logger receives the security log (one line per dropped frame,
	// RFC 7610 §5) and errors. Default slog.Default().
	Logger *slog.Logger
	// LogBurst and LogRate limit the security log lines per port: a burst of
	// LogBurst lines, then LogRate lines per second. The counters are never
	// limited. Defaults 20 and 10.
	LogBurst int
	LogRate  float64
	// KeepOffloads leaves the ports' offload settings alone (for tests on
	// devices where ethtool is missing).
	KeepOffloads bool
	// MACAge is how long a learned MAC address stays; default 5 minutes.
	MACAge time.Duration
}

// Switch is a userspace layer-2 switch that enforces DHCPv6-Shield on its
// untrusted ports. It reads every port with an AF_PACKET socket, learns source
// MAC addresses, forwards known unicast to its port and floods multicast,
// broadcast and unknown unicast to all other ports. Learning is shared across
// VLANs (one table; tags are forwarded untouched).
type Switch struct {
	cfg   SwitchConfig
	log   *slog.Logger
	ports []*port
	macs  macTable
}

type port struct {
	Port
	idx int
	fd  int
	c   counters
}

type counters struct {
	rxFrames, rxBytes, rxErrors atomic.Uint64
	passed, dropped             atomic.Uint64
	serverMessages              atomic.Uint64
	byReason, drops             [numReasons]atomic.Uint64
	txFrames, txErrors, txBusy  atomic.Uint64
	logSuppressed               atomic.Uint64
}

// NewSwitch returns a switch for the given ports; Run opens them.
func NewSwitch(cfg SwitchConfig) (*Switch, error) {
	if len(cfg.Ports) == 0 {
		return nil, errors.New("shield switch: no ports")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LogBurst <= 0 {
		cfg.LogBurst = 20
	}
	if cfg.LogRate <= 0 {
		cfg.LogRate = 10
	}
	if cfg.MACAge <= 0 {
		cfg.MACAge = 5 * time.Minute
	}
	s := &Switch{cfg: cfg, log: cfg.Logger, macs: macTable{m: map[[6]byte]macEntry{}, age: cfg.MACAge}}
	seen := map[string]bool{}
	for i, p := range cfg.Ports {
		if seen[p.Name] {
			return nil, fmt.Errorf("shield switch: port %s given twice", p.Name)
		}
		seen[p.Name] = true
		s.ports = append(s.ports, &port{Port: p, idx: i, fd: -1})
	}
	return s, nil
}

// Run opens the ports and switches frames until ctx ends or a port fails. It
// closes its sockets before it returns; no goroutine outlives it.
func (s *Switch) Run(ctx context.Context) error {
	defer func() {
		for _, p := range s.ports {
			if p.fd >= 0 {
				unix.Close(p.fd)
				p.fd = -1
			}
		}
	}()
	for _, p := range s.ports {
		if err := s.open(p); err != nil {
			return err
		}
	}
	s.log.Info("dhcp6-shield running", "ports", s.describePorts(), "unknown_next_header", s.cfg.Shield.UnknownNextHeader.String())
	g, ctx := errgroup.WithContext(ctx)
	for _, p := range s.ports {
		g.Go(func() error { return s.serve(ctx, p) })
	}
	err := g.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (s *Switch) describePorts() string {
	var b strings.Builder
	for i, p := range s.ports {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p.Name)
		if p.Trusted {
			b.WriteString("(trusted)")
		}
	}
	return b.String()
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// open turns off the port's offloads, opens its AF_PACKET socket and puts
// it in promiscuous mode.
func (s *Switch) open(p *port) error {
	ifi, err := net.InterfaceByName(p.Name)
	if err != nil {
		return fmt.Errorf("port %s: look up interface: %w", p.Name, err)
	}
	if ifi.Flags&net.FlagUp == 0 {
		s.log.Warn("port is down; frames flow once it is up", "iface", p.Name)
	}
	if !s.cfg.KeepOffloads {
		s.disableOffloads(p.Name)
	}
	// Protocol 0 at creation: the socket receives nothing until bind names
	// the interface, so no frame of another interface slips in.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("port %s: AF_PACKET socket: %w", p.Name, err)
	}
	p.fd = fd
	// The kernel strips the outer VLAN tag before packet taps see a frame
	// (in software even without rx-vlan offload); PACKET_AUXDATA returns it
	// so serve can put it back: a tag must not hide a message (SPEC §3).
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		return fmt.Errorf("port %s: PACKET_AUXDATA: %w", p.Name, err)
	}
	// Our own transmissions come back as PACKET_OUTGOING; serve skips
	// them too, this only saves the work on kernels ≥ 4.20.
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	// See rx: offloaded checksums travel with the frame.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fmt.Errorf("port %s: PACKET_VNET_HDR: %w", p.Name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return fmt.Errorf("port %s: bind AF_PACKET: %w", p.Name, err)
	}
	// Promiscuous while the socket is open; the kernel undoes it on close.
	mreq := unix.PacketMreq{Ifindex: int32(ifi.Index), Type: unix.PACKET_MR_PROMISC}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
		return fmt.Errorf("port %s: promiscuous mode: %w", p.Name, err)
	}
	return nil
}

// offloadFeatures are turned off one by one so that an unsupported one does
// not stop the others: VLAN offloads would move tags out of the frame, and
// receive/segmentation offloads would merge frames beyond the MTU.
var offloadFeatures = []string{"rxvlan", "txvlan", "rx-vlan-stag-hw-parse", "tx-vlan-stag-hw-insert", "gro", "lro", "tso", "gso"}

func (s *Switch) disableOffloads(ifname string) {
	for _, f := range offloadFeatures {
		out, err := exec.Command("ethtool", "-K", ifname, f, "off").CombinedOutput()
		if err != nil {
			s.log.Debug("offload not turned off", "iface", ifname, "feature", f, "err", err, "output", strings.TrimSpace(string(out)))
		}
	}
}

// rx is one port's receive buffer and recvmsg arguments, reused for every
// frame so the receive path does not allocate.
//
// The socket has PACKET_VNET_HDR: every frame comes with a virtio-net header
// that the switch hands back to the kernel when it sends the frame on. A frame
// from a veth peer or a local socket may carry a checksum the sender left for
// offload (CHECKSUM_PARTIAL); without the header its copy would leave with a
// wrong UDP checksum and be dropped by the receiver.
type rx struct {
	// buf is vlanLen octets of headroom to re-insert a stripped tag, the
	// virtio-net header, then the frame.
	buf [vlanLen + vnetLen + 65536]byte
	oob [64]byte
	sa  unix.RawSockaddrLinklayer
	iov unix.Iovec
	msg unix.Msghdr
	pfd [1]unix.PollFd
}

const (
	vlanLen = 4
	// vnetLen is the size of struct virtio_net_hdr.
	vnetLen = 10
	// virtio-net header fields.
	vnetFlagNeedsCsum = 1
	vnetCsumStart     = 6
)

// recv reads one frame. It returns the virtio-net header followed by the
// frame (with any stripped outer VLAN tag re-inserted), ready to be written
// to another port, or nil for a frame to ignore. withVnet says whether the
// socket has PACKET_VNET_HDR; without it the result is the bare frame.
func (r *rx) recv(fd int, withVnet bool) ([]byte, error) {
	hl := 0
	if withVnet {
		hl = vnetLen
	}
	r.iov.Base = &r.buf[vlanLen]
	r.iov.SetLen(len(r.buf) - vlanLen)
	r.msg.Name = (*byte)(unsafe.Pointer(&r.sa))
	r.msg.Namelen = unix.SizeofSockaddrLinklayer
	r.msg.Iov = &r.iov
	r.msg.Iovlen = 1
	r.msg.Control = &r.oob[0]
	r.msg.SetControllen(len(r.oob))
	r.msg.Flags = 0
	n, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.msg)), 0)
	if e != 0 {
		return nil, e
	}
	if r.sa.Pkttype == unix.PACKET_OUTGOING {
		return nil, nil
	}
	if r.msg.Flags&unix.MSG_TRUNC != 0 || int(n) < hl {
		return nil, errOversize
	}
	out := r.buf[vlanLen : vlanLen+int(n)]
	if aux, ok := r.auxdata(); ok && (aux.Status&unix.TP_STATUS_VLAN_VALID != 0 || aux.Vlan_tci != 0) && len(out) >= hl+12 {
		tpid := uint16(etherType8021Q)
		if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
			tpid = aux.Vlan_tpid
		}
		copy(r.buf[:hl+12], out[:hl+12]) // header and MAC addresses move back
		binary.BigEndian.PutUint16(r.buf[hl+12:], tpid)
		binary.BigEndian.PutUint16(r.buf[hl+14:], aux.Vlan_tci)
		out = r.buf[:vlanLen+int(n)]
		if withVnet && out[0]&vnetFlagNeedsCsum != 0 {
			// The checksum start counts from the frame's first octet.
			cs := binary.NativeEndian.Uint16(out[vnetCsumStart:])
			binary.NativeEndian.PutUint16(out[vnetCsumStart:], cs+vlanLen)
		}
	}
	return out, nil
}

var errOversize = errors.New("frame larger than the receive buffer")

// auxdata finds the PACKET_AUXDATA control message.
func (r *rx) auxdata() (*unix.TpacketAuxdata, bool) {
	oob := r.oob[:r.msg.Controllen]
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < unix.SizeofCmsghdr || int(h.Len) > len(oob) {
			return nil, false
		}
		if h.Level == unix.SOL_PACKET && h.Type == unix.PACKET_AUXDATA && int(h.Len) >= unix.CmsgLen(int(unsafe.Sizeof(unix.TpacketAuxdata{}))) {
			return (*unix.TpacketAuxdata)(unsafe.Pointer(&oob[unix.CmsgLen(0)])), true
		}
		next := unix.CmsgSpace(int(h.Len) - unix.CmsgLen(0))
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return nil, false
}

// serve is the receive loop of one port: it classifies each frame, counts
// it, logs drops and forwards what passes.
func (s *Switch) serve(ctx context.Context, p *port) error {
	r := new(rx)
	lim := newLimiter(s.cfg.LogBurst, s.cfg.LogRate)
	for {
		out, err := r.recv(p.fd, true)
		switch {
		case err == nil:
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			if err := ctx.Err(); err != nil {
				return err
			}
			// Wake at least every 200 ms to notice the end of ctx.
			r.pfd[0] = unix.PollFd{Fd: int32(p.fd), Events: unix.POLLIN}
			if _, err := unix.Poll(r.pfd[:], 200); err != nil && !errors.Is(err, unix.EINTR) {
				return fmt.Errorf("port %s: poll: %w", p.Name, err)
			}
			continue
		case errors.Is(err, errOversize), errors.Is(err, unix.ENETDOWN), errors.Is(err, unix.ENOBUFS),
			errors.Is(err, unix.EINVAL): // a GSO type the virtio-net header cannot express

			p.c.rxErrors.Add(1)
			continue
		default:
			return fmt.Errorf("port %s: receive: %w", p.Name, err)
		}
		if out == nil {
			continue
		}
		frame := out[vnetLen:]
		p.c.rxFrames.Add(1)
		p.c.rxBytes.Add(uint64(len(frame)))
		v := Classify(s.cfg.Shield, frame, p.Trusted)
		p.c.byReason[v.Reason].Add(1)
		if v.Reason.Alert() {
			p.c.serverMessages.Add(1)
		}
		if v.Action == Drop {
			p.c.dropped.Add(1)
			p.c.drops[v.Reason].Add(1)
			if lim.allow(time.Now()) {
				s.logDrop(p, v.Reason, frame, lim.takeSuppressed())
			} else {
				p.c.logSuppressed.Add(1)
			}
			continue
		}
		p.c.passed.Add(1)
		s.forward(p, out)
	}
}

// forward sends out (virtio-net header and frame) to the port that knows
// the destination, or floods it.
func (s *Switch) forward(in *port, out []byte) {
	frame := out[vnetLen:]
	if len(frame) < 14 {
		return
	}
	var dst, src [6]byte
	copy(dst[:], frame[0:6])
	copy(src[:], frame[6:12])
	now := time.Now()
	if src[0]&1 == 0 {
		s.macs.learn(src, in.idx, now)
	}
	if dst[0]&1 == 0 {
		if port, ok := s.macs.lookup(dst, now); ok {
			if port != in.idx {
				s.send(s.ports[port], out)
			}
			return
		}
	}
	for _, p := range s.ports { // multicast, broadcast, unknown unicast
		if p != in {
			s.send(p, out)
		}
	}
}

func (s *Switch) send(p *port, out []byte) {
	_, err := unix.Write(p.fd, out)
	switch {
	case err == nil:
		p.c.txFrames.Add(1)
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOBUFS):
		p.c.txBusy.Add(1) // congestion: drop, as a switch does
	default:
		p.c.txErrors.Add(1)
	}
}

// logDrop writes the security log line for a dropped frame: an alert for a
// DHCPv6-server message (RFC 7610 §5 rule 4), a fault for a packet that could
// not be parsed (rules 2 and 3).
func (s *Switch) logDrop(p *port, r Reason, frame []byte, suppressed uint64) {
	kind := "security fault"
	if r.Alert() {
		kind = "security alert"
	}
	attrs := []any{"iface", p.Name, "reason", r.String(), "src_mac", net.HardwareAddr(frame[6:12]).String()}
	if src, dst, ok := ipv6Addrs(frame); ok {
		attrs = append(attrs, "src", src.String(), "dst", dst.String())
	}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	s.log.Warn("dhcpv6-shield drop: "+kind, attrs...)
}

// ipv6Addrs returns the addresses of the IPv6 header in frame, if there is one.
func ipv6Addrs(frame []byte) (src, dst netip.Addr, ok bool) {
	off := 12
	for len(frame) >= off+2 {
		switch binary.BigEndian.Uint16(frame[off:]) {
		case etherType8021Q, etherType8021AD, etherTypeQinQ, etherTypeQinQ2:
			off += 4
			continue
		case etherTypeIPv6:
			if len(frame) < off+2+40 {
				return src, dst, false
			}
			ip := frame[off+2:]
			return netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40])), true
		}
		break
	}
	return src, dst, false
}

// limiter is a token bucket for log lines, owned by one port's goroutine.
type limiter struct {
	tokens, burst, rate float64
	last                time.Time
	suppressed          uint64
}

func newLimiter(burst int, rate float64) *limiter {
	return &limiter{tokens: float64(burst), burst: float64(burst), rate: rate}
}

func (l *limiter) allow(now time.Time) bool {
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		return true
	}
	l.suppressed++
	return false
}

// takeSuppressed returns how many lines were suppressed since the last line.
func (l *limiter) takeSuppressed() uint64 {
	n := l.suppressed
	l.suppressed = 0
	return n
}

// macTable maps learned MAC addresses to ports.
type macTable struct {
	mu  sync.RWMutex
	m   map[[6]byte]macEntry
	age time.Duration
}

type macEntry struct {
	port int
	seen time.Time
}

// maxMACs bounds the table against floods of forged source addresses.
const maxMACs = 8192

func (t *macTable) learn(mac [6]byte, port int, now time.Time) {
	t.mu.RLock()
	e, ok := t.m[mac]
	t.mu.RUnlock()
	// Refresh at most once a second per address to keep the write lock rare.
	if ok && e.port == port && now.Sub(e.seen) < time.Second {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[mac]; !ok && len(t.m) >= maxMACs {
		for k, e := range t.m {
			if now.Sub(e.seen) > t.age {
				delete(t.m, k)
			}
		}
		if len(t.m) >= maxMACs {
			return
		}
	}
	t.m[mac] = macEntry{port, now}
}

func (t *macTable) lookup(mac [6]byte, now time.Time) (int, bool) {
	t.mu.RLock()
	e, ok := t.m[mac]
	t.mu.RUnlock()
	if !ok || now.Sub(e.seen) > t.age {
		return 0, false
	}
	return e.port, true
}

func (t *macTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}

// PortStats are the counters of one port. Drops counts frames dropped by
// DHCPv6-Shield per reason (RFC 7610 §5: a per-port drop counter).
type PortStats struct {
	Name     string `json:"name"`
	Trusted  bool   `json:"trusted"`
	RxFrames uint64 `json:"rx_frames"`
	RxBytes  uint64 `json:"rx_bytes"`
	RxErrors uint64 `json:"rx_errors"`
	Passed   uint64 `json:"passed"`
	Dropped  uint64 `json:"dropped"`
	// Drops holds every drop reason, zero or not.
	Drops map[string]uint64 `json:"drops"`
	// Seen counts received frames by the reason Classify gave, whatever
	// the action.
	Seen map[string]uint64 `json:"seen"`
	// ServerMessages counts DHCPv6-server messages received: passed on a
	// trusted port, dropped on an untrusted one.
	ServerMessages uint64 `json:"server_messages"`
	TxFrames       uint64 `json:"tx_frames"`
	TxBusy         uint64 `json:"tx_busy"`
	TxErrors       uint64 `json:"tx_errors"`
	LogSuppressed  uint64 `json:"log_suppressed"`
}

// Stats is a snapshot of the switch's counters.
type Stats struct {
	Ports []PortStats `json:"ports"`
	MACs  int         `json:"macs"`
}

// dropReasons are the reasons for which Classify can drop.
var dropReasons = []Reason{ReasonClientBoundDHCPv6, ReasonRelayReply, ReasonIncompleteFirstFragment, ReasonUnknownNextHeader, ReasonTruncated}

// Stats returns the counters. It is safe to call while Run runs.
func (s *Switch) Stats() Stats {
	st := Stats{MACs: s.macs.len()}
	for _, p := range s.ports {
		ps := PortStats{
			Name: p.Name, Trusted: p.Trusted,
			RxFrames: p.c.rxFrames.Load(), RxBytes: p.c.rxBytes.Load(), RxErrors: p.c.rxErrors.Load(),
			Passed: p.c.passed.Load(), Dropped: p.c.dropped.Load(),
			ServerMessages: p.c.serverMessages.Load(),
			TxFrames:       p.c.txFrames.Load(), TxBusy: p.c.txBusy.Load(), TxErrors: p.c.txErrors.Load(),
			LogSuppressed: p.c.logSuppressed.Load(),
			Drops:         map[string]uint64{},
			Seen:          map[string]uint64{},
		}
		for _, r := range dropReasons {
			ps.Drops[r.String()] = p.c.drops[r].Load()
		}
		for r := range numReasons {
			ps.Seen[r.String()] = p.c.byReason[r].Load()
		}
		st.Ports = append(st.Ports, ps)
	}
	return st
}

// ServeStats answers every connection on ln with the counters as one JSON
// object and closes it. It returns when ctx ends (closing ln) or Accept fails.
func (s *Switch) ServeStats(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("stats socket %s: accept: %w", ln.Addr(), err)
		}
		_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if err := json.NewEncoder(c).Encode(s.Stats()); err != nil {
			s.log.Debug("stats socket: write", "err", err)
		}
		c.Close()
	}
}
