// Command addrreg-loadgen measures an address-registration server the way
// perfdhcp measures a DHCP server: it sends ADDR-REG-INFORMs at a target rate
// (or as fast as a window of outstanding exchanges allows) from many
// addresses, each from its own source address as RFC 9686 requires, and
// reports sent, replied, dropped and latency percentiles.
//
//	addrreg-loadgen -i eth0 --prefix 2001:db8:1::/64 -n 256 --rate 0 --count 50000 --duration 30s
//
// It adds the n addresses (/128, nodad) to the interface and removes them at
// exit. A server answering many addresses needs room in its neighbour table
// (net.ipv6.neigh.default.gc_thresh3, default 1024).
//
// With --relay LINK-ADDRESS it acts as a relay agent instead (RFC 8415 §19.1):
// one socket on [::]:547 sends every INFORM inside a Relay-Forward whose
// link-address is LINK-ADDRESS and whose peer-address is the client's, a
// distinct client (DUID) and address per message, at the fixed --rate; the
// server answers with Relay-Replies to that socket. Nothing is added to the
// interface. A reply's latency ends at its kernel receive timestamp, so the
// generator's own scheduling delay on a busy machine is not counted as the
// server's. This is how server throughput is compared with other servers:
//
//	addrreg-loadgen -i eth0 --relay 2001:db8:2::1 --prefix 2001:db8:2::/64 --server 2001:db8:1::1 --rate 20000 --duration 10s --count 0
//
// Its interface is the command line (flags, output, exit status), not Go:
// the packages it is built from are listed with their status in README.md.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	iface     string
	prefix    netip.Prefix
	offset    uint32
	n         int
	rate      float64
	count     int
	duration  time.Duration
	timeout   time.Duration
	window    int
	server    netip.Addr
	preferred uint32
	valid     uint32
	json      bool
	keep      bool
	relay     netip.Addr // relay mode: the link-address of the Relay-Forwards
	random    bool       // relay mode: clients' interface IDs and DUIDs at random (--keys random)
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("addrreg-loadgen", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var prefix, server string
	fs.StringVarP(&o.iface, "interface", "i", "", "interface to send on (required)")
	fs.StringVar(&prefix, "prefix", "", "prefix to take the source addresses from (required), e.g. 2001:db8:1::/64")
	fs.Uint32Var(&o.offset, "offset", 0x1000, "interface ID of the first address")
	fs.IntVarP(&o.n, "addresses", "n", 256, "number of source addresses (added as /128 nodad)")
	fs.Float64Var(&o.rate, "rate", 0, "INFORMs per second; 0: as fast as the window allows")
	fs.IntVar(&o.count, "count", 10000, "stop after this many INFORMs (0: no limit)")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "stop sending after this long")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Second, "an INFORM unanswered after this long is dropped")
	fs.IntVar(&o.window, "window", 256, "most exchanges outstanding at once")
	fs.StringVar(&server, "server", "ff02::1:2", "destination address (port 547)")
	fs.Uint32Var(&o.preferred, "preferred", 1800, "preferred lifetime sent, seconds")
	fs.Uint32Var(&o.valid, "valid", 3600, "valid lifetime sent, seconds")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.BoolVar(&o.keep, "keep-addresses", false, "leave the added addresses on the interface")
	keys := fs.String("keys", "sequential", "relay mode: the clients' interface IDs and DUIDs: sequential (counting up from --offset and 0) or random (64-bit interface IDs and DUIDs in no order, as real clients' are; still one distinct client per message)")
	relay := fs.String("relay", "", "relay mode: send Relay-Forwards with this link-address from [::]:547, a distinct client and address per message (needs --rate)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "addrreg-loadgen: %v\n", err)
		return 2
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "addrreg-loadgen: "+format+"\n", a...)
		return 2
	}
	if o.iface == "" {
		return bad("--interface is required")
	}
	p, err := netip.ParsePrefix(prefix)
	if err != nil || !p.Addr().Is6() || p.Bits() > 112 {
		return bad("invalid --prefix %q: want an IPv6 prefix of /112 or shorter", prefix)
	}
	o.prefix = p.Masked()
	if o.server, err = netip.ParseAddr(server); err != nil {
		return bad("invalid --server %q", server)
	}
	if o.n < 1 || o.n > 65535 {
		return bad("invalid --addresses %d: want 1..65535", o.n)
	}
	if o.window < 1 || o.rate < 0 || o.count < 0 || o.duration <= 0 || o.timeout <= 0 {
		return bad("--window, --rate, --count, --duration and --timeout must be positive (rate and count may be 0)")
	}
	if o.preferred > o.valid {
		return bad("--preferred must not exceed --valid")
	}
	if *relay != "" {
		if o.relay, err = netip.ParseAddr(*relay); err != nil || !o.relay.Is6() {
			return bad("invalid --relay %q: want an IPv6 link-address", *relay)
		}
		if o.rate <= 0 {
			return bad("--relay needs a --rate above 0")
		}
		if o.count > maxRelayCount {
			return bad("invalid --count %d with --relay: at most %d", o.count, maxRelayCount)
		}
	}
	switch *keys {
	case "sequential":
	case "random":
		if p.Bits() > 64 {
			return bad("--keys random needs a --prefix of /64 or shorter (its 64-bit interface IDs)")
		}
		o.random = true
	default:
		return bad("invalid --keys %q: want sequential or random", *keys)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	loadFn := load
	if o.relay.IsValid() {
		loadFn = loadRelay
	}
	rep, err := loadFn(ctx, o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "addrreg-loadgen: %v\n", err)
		return 1
	}
	if o.json {
		_ = json.NewEncoder(stdout).Encode(rep)
	} else {
		rep.print(stdout)
	}
	return 0
}

// report is what a run measured.
type report struct {
	Sent     int     `json:"sent"`
	Replied  int     `json:"replied"`
	Answered float64 `json:"answered_pct"` // replied in time, % of sent
	Dropped  int     `json:"dropped"`      // unanswered within --timeout
	Orphans  int     `json:"orphans"`      // replies matching no outstanding INFORM
	Elapsed  float64 `json:"elapsed_s"`
	Rate     float64 `json:"replies_per_s"`
	MinMs    float64 `json:"min_ms"`
	AvgMs    float64 `json:"avg_ms"`
	P50Ms    float64 `json:"p50_ms"`
	P90Ms    float64 `json:"p90_ms"`
	P99Ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
	Addrs    int     `json:"addresses"`
	Target   float64 `json:"target_rate"`
	SendErrs int     `json:"send_errors"`
}

func (r report) print(w io.Writer) {
	target := "max"
	if r.Target > 0 {
		target = fmt.Sprintf("%.0f/s", r.Target)
	}
	fmt.Fprintf(w, "***Rate statistics***\n")
	fmt.Fprintf(w, "Rate: %.1f ADDR-REG exchanges/second, target %s, %d source addresses\n\n", r.Rate, target, r.Addrs)
	fmt.Fprintf(w, "***Statistics for: ADDR-REG-INFORM / ADDR-REG-REPLY***\n")
	fmt.Fprintf(w, "sent packets: %d\nreceived packets: %d\ndrops: %d\n", r.Sent, r.Replied, r.Dropped)
	if r.Sent > 0 {
		fmt.Fprintf(w, "drops ratio: %.3f %%\n", 100*float64(r.Dropped)/float64(r.Sent))
	}
	fmt.Fprintf(w, "orphans: %d\nsend errors: %d\n", r.Orphans, r.SendErrs)
	fmt.Fprintf(w, "min delay: %.3f ms\navg delay: %.3f ms\np50 delay: %.3f ms\np90 delay: %.3f ms\np99 delay: %.3f ms\nmax delay: %.3f ms\n",
		r.MinMs, r.AvgMs, r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs)
	fmt.Fprintf(w, "elapsed: %.3f s\n", r.Elapsed)
}

// finish fills the figures computed from the latencies of the answered exchanges.
func (r *report) finish(lat []time.Duration, elapsed time.Duration) {
	slices.Sort(lat)
	r.Elapsed = elapsed.Seconds()
	if r.Sent > 0 {
		r.Answered = 100 * float64(r.Replied) / float64(r.Sent)
	}
	if len(lat) == 0 {
		return
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	r.Rate = float64(len(lat)) / r.Elapsed
	r.MinMs, r.MaxMs = ms(lat[0]), ms(lat[len(lat)-1])
	r.AvgMs = ms(sum / time.Duration(len(lat)))
	r.P50Ms, r.P90Ms, r.P99Ms = ms(percentile(lat, 50)), ms(percentile(lat, 90)), ms(percentile(lat, 99))
}

// percentile returns the p-th percentile (0..100) of sorted ds, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// addresses returns the n source addresses.
func addresses(o options) []netip.Addr {
	out := make([]netip.Addr, o.n)
	base := o.prefix.Addr().As16()
	for i := range out {
		a := base
		id := binary.BigEndian.Uint32(a[12:]) + o.offset + uint32(i)
		binary.BigEndian.PutUint32(a[12:], id)
		out[i] = netip.AddrFrom16(a)
	}
	return out
}

// setup adds the addresses to the interface; the returned func removes them.
func setup(o options, addrs []netip.Addr) (func(), error) {
	link, err := netlink.LinkByName(o.iface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", o.iface, err)
	}
	var added []*netlink.Addr
	undo := func() {
		if o.keep {
			return
		}
		for _, a := range added {
			_ = netlink.AddrDel(link, a)
		}
	}
	for _, a := range addrs {
		na := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(128, 128)}, Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrAdd(link, na); err != nil {
			if errors.Is(err, unix.EEXIST) {
				continue
			}
			undo()
			return nil, fmt.Errorf("add %s to %s: %w", a, o.iface, err)
		}
		added = append(added, na)
	}
	return undo, nil
}

type outstanding struct {
	sent time.Time
}

func load(ctx context.Context, o options, stderr io.Writer) (report, error) {
	addrs := addresses(o)
	undo, err := setup(o, addrs)
	if err != nil {
		return report{}, err
	}
	defer undo()
	ifi, err := net.InterfaceByName(o.iface)
	if err != nil {
		return report{}, fmt.Errorf("interface %s: %w", o.iface, err)
	}
	// One socket on [::]:546 for every address: IPV6_PKTINFO picks the
	// source of each INFORM, and replies to any of them arrive here.
	c, pc, dst, err := openSocket(o, "[::]:546", 8<<20)
	if err != nil {
		return report{}, err
	}
	defer c.Close()

	duids := make([][]byte, len(addrs))
	for i := range duids {
		// DUID-EN (RFC 8415 §11.3), enterprise 32473 (documentation), one per address.
		d := binary.BigEndian.AppendUint16(nil, 2)
		d = binary.BigEndian.AppendUint32(d, 32473)
		d = binary.BigEndian.AppendUint32(d, uint32(i))
		duids[i] = d
	}

	var (
		mu      sync.Mutex
		pending = make(map[uint32]outstanding)
		lat     []time.Duration
		rep     = report{Addrs: len(addrs), Target: o.rate}
		slots   = make(chan struct{}, o.window)
	)
	var xidBase [3]byte
	_, _ = rand.Read(xidBase[:])
	nextXID := binary.BigEndian.Uint32(append([]byte{0}, xidBase[:]...))

	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 65536)
		for {
			n, _, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			now := time.Now()
			if n < 4 || buf[0] != 37 { // ADDR-REG-REPLY
				continue
			}
			xid := uint32(buf[1])<<16 | uint32(buf[2])<<8 | uint32(buf[3])
			mu.Lock()
			p, ok := pending[xid]
			if ok {
				delete(pending, xid)
				lat = append(lat, now.Sub(p.sent))
				rep.Replied++
			} else {
				rep.Orphans++
			}
			mu.Unlock()
			if ok {
				<-slots
			}
		}
	}()

	// Sweep unanswered exchanges.
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sweepCtx.Done():
				return
			case now := <-t.C:
				var freed int
				mu.Lock()
				for x, p := range pending {
					if now.Sub(p.sent) > o.timeout {
						delete(pending, x)
						rep.Dropped++
						freed++
					}
				}
				mu.Unlock()
				for range freed {
					<-slots
				}
			}
		}
	}()

	start := time.Now()
	sendCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	cm := &ipv6.ControlMessage{IfIndex: ifi.Index}
	msg := make([]byte, 0, 64)
send:
	for i := 0; o.count == 0 || i < o.count; i++ {
		if o.rate > 0 {
			due := start.Add(time.Duration(float64(i) / o.rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-sendCtx.Done():
					break send
				case <-time.After(d):
				}
			}
		}
		select {
		case <-sendCtx.Done():
			break send
		case slots <- struct{}{}:
		}
		k := i % len(addrs)
		xid := nextXID & 0xffffff
		nextXID++
		msg = inform(msg[:0], xid, duids[k], addrs[k], o.preferred, o.valid)
		cm.Src = addrs[k].AsSlice()
		mu.Lock()
		pending[xid] = outstanding{sent: time.Now()}
		rep.Sent++
		mu.Unlock()
		if _, err := pc.WriteTo(msg, cm, dst); err != nil {
			mu.Lock()
			delete(pending, xid)
			rep.SendErrs++
			first := rep.SendErrs == 1
			mu.Unlock()
			<-slots
			if first {
				fmt.Fprintf(stderr, "addrreg-loadgen: send from %s: %v\n", addrs[k], err)
			}
		}
	}
	// Wait for the last replies (or their timeout).
	deadline := time.Now().Add(o.timeout + 50*time.Millisecond)
	for time.Now().Before(deadline) {
		mu.Lock()
		left := len(pending)
		mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	end := time.Now()
	stopSweep()
	<-sweepDone
	c.Close()
	<-readDone

	mu.Lock()
	defer mu.Unlock()
	rep.Dropped += len(pending)
	rep.finish(lat, end.Sub(start))
	return rep, nil
}

// inform appends an ADDR-REG-INFORM (RFC 9686 §4.2): Client ID and one IA
// Address for the source address, nothing else.
func inform(b []byte, xid uint32, duid []byte, a netip.Addr, preferred, valid uint32) []byte {
	b = append(b, 36, byte(xid>>16), byte(xid>>8), byte(xid))
	b = binary.BigEndian.AppendUint16(b, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(len(duid)))
	b = append(b, duid...)
	b = binary.BigEndian.AppendUint16(b, 5)
	b = binary.BigEndian.AppendUint16(b, 24)
	a16 := a.As16()
	b = append(b, a16[:]...)
	b = binary.BigEndian.AppendUint32(b, preferred)
	return binary.BigEndian.AppendUint32(b, valid)
}

// openSocket listens on addr with socket buffers of buf bytes (above
// rmem_max/wmem_max when we have CAP_NET_ADMIN) and returns the server's
// address (port 547) to send to.
func openSocket(o options, addr string, buf int) (net.PacketConn, *ipv6.PacketConn, *net.UDPAddr, error) {
	c, err := net.ListenPacket("udp6", addr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	if uc, ok := c.(*net.UDPConn); ok {
		_ = uc.SetReadBuffer(buf)
		_ = uc.SetWriteBuffer(buf)
		if rc, err := uc.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, buf)
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, buf)
			})
		}
	}
	dst := &net.UDPAddr{IP: o.server.AsSlice(), Port: 547}
	if o.server.IsMulticast() || o.server.IsLinkLocalUnicast() {
		dst.Zone = o.iface
	}
	return c, ipv6.NewPacketConn(c), dst, nil
}
