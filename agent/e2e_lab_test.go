package agent_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/test/topo"
)

// The end-to-end lab: a router running radvd, a server namespace and a
// host running the real addrregd binary, joined by a bridge. A sniffer in
// the server's namespace records every DHCPv6 message that reaches port 547,
// so tests assert on the bytes on the wire; the server's bindings are read
// with the reference server's own leasequery client, as an operator would.

const (
	prefix1  = "2001:db8:1::/64"
	ula1     = "fd00:db8:1::/64"
	serverIP = "2001:db8:1::2"
	testDUID = "00040102030405060708090a0b0c0d0e0f10"
)

type lab struct {
	n                    *topo.Net
	router, server, host *topo.Node
	ra                   topo.RA
	radvd                *topo.Radvd
	sniff                *sniffer
	dbPath               string
	refserver            *topo.Proc
	stateFile            string // addrregd's --state-file (in the test's temporary directory)
}

type labOpts struct {
	ra        topo.RA // default: O flag, prefix1 valid 600 s preferred 300 s
	tempaddr  bool    // use_tempaddr=2 on the host
	noRouter  bool
	noServer  bool     // no reference server (tests that bring their own)
	serverArg []string // extra refserver flags
}

func newLab(t testing.TB, o labOpts) *lab {
	t.Helper()
	topo.RequireRoot(t)
	l := &lab{n: topo.New(t)}
	l.router, l.server, l.host = l.n.Node("router"), l.n.Node("server"), l.n.Node("host")
	if o.tempaddr {
		l.host.Sysctl(t, "net.ipv6.conf.eth0.use_tempaddr", "2")
	}
	l.server.Sysctl(t, "net.ipv6.conf.eth0.accept_ra", "0")
	// The server answers by unicast to the registered address: it needs an
	// on-link route to the prefixes (SPEC.md §5).
	l.server.MustExec(t, "ip", "-6", "addr", "add", serverIP+"/64", "dev", "eth0", "nodad")
	l.server.MustExec(t, "ip", "-6", "addr", "add", "fd00:db8:1::2/64", "dev", "eth0", "nodad")
	l.sniff = startSniffer(t, l.server)
	if !o.noServer {
		l.startRefserver(t, o.serverArg...)
	}
	if !o.noRouter {
		l.ra = o.ra
		if len(l.ra.Prefixes) == 0 {
			l.ra = topo.RA{Other: true, Prefixes: []topo.PIO{{Prefix: prefix1, Valid: 600 * time.Second, Preferred: 300 * time.Second}}}
		}
		l.radvd = l.router.StartRadvd(t, l.ra)
	}
	return l
}

// startRefserver runs the reference server in the server namespace (newLab
// does unless noServer; tests that must start it later call it themselves).
func (l *lab) startRefserver(t testing.TB, extra ...string) *topo.Proc {
	t.Helper()
	l.dbPath = filepath.Join(t.TempDir(), "bindings.db")
	args := append([]string{topo.BuildBinary(t, "./cmd/addrreg-refserver"), "-i", "eth0",
		"--prefix", "eth0=" + prefix1, "--prefix", "eth0=" + ula1,
		"--db", l.dbPath, "--leasequery-allow", "::/0", "--log-level", "debug"}, extra...)
	l.refserver = l.server.Start(t, "refserver", args...)
	l.refserver.WaitOutput(t, "msg=listening", 10*time.Second)
	return l.refserver
}

// startAgent runs addrregd on the host with the test DUID and its state
// file in the test's temporary directory (never the system's).
func (l *lab) startAgent(t testing.TB, args ...string) *topo.Proc {
	t.Helper()
	argv := append([]string{topo.BuildBinary(t, "./cmd/addrregd"), "-i", "eth0", "--duid", testDUID, "--log-level", "debug",
		"--state-file", l.statePath(t)}, args...)
	return l.host.Start(t, "addrregd", argv...)
}

func (l *lab) statePath(t testing.TB) string {
	if l.stateFile == "" {
		l.stateFile = filepath.Join(t.TempDir(), "state.json")
	}
	return l.stateFile
}

// startAgentNiced is startAgent at nice -20, for tests that assert the
// agent's timing to tens of milliseconds: on a loaded machine other work
// must not delay its timers.
func (l *lab) startAgentNiced(t testing.TB, args ...string) *topo.Proc {
	t.Helper()
	argv := append([]string{"nice", "-n", "-20", topo.BuildBinary(t, "./cmd/addrregd"), "-i", "eth0", "--duid", testDUID, "--log-level", "debug",
		"--state-file", l.statePath(t)}, args...)
	return l.host.Start(t, "addrregd", argv...)
}

// globals waits for n DAD-complete global addresses on the host.
func (l *lab) globals(t testing.TB, n int) []netlink.Addr {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := l.host.WaitAddrs(t, "eth0", topo.Global, 15*time.Second)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("host has %d global addresses, want %d: %v", len(got), n, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// binding is one address the server holds, as leasequery reports it.
type binding struct {
	DUID             string
	Addr             netip.Addr
	Preferred, Valid uint32
}

// bindings asks the reference server, by leasequery for the test client's
// DUID, which addresses it holds.
func (l *lab) bindings(t testing.TB) map[netip.Addr]binding {
	t.Helper()
	out, err := l.server.Exec(topo.BuildBinary(t, "./cmd/addrreg-refserver"), "query", "--client-id", testDUID, "--server", serverIP, "--json")
	if err != nil {
		t.Fatalf("leasequery: %v", err)
	}
	var r struct {
		Status  uint16 `json:"status"`
		Clients []struct {
			DUID  string `json:"duid"`
			Addrs []struct {
				Addr      string `json:"addr"`
				Preferred uint32 `json:"preferred_lifetime"`
				Valid     uint32 `json:"valid_lifetime"`
			} `json:"addrs"`
		} `json:"clients"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("leasequery output %q: %v", out, err)
	}
	m := map[netip.Addr]binding{}
	for _, c := range r.Clients {
		for _, a := range c.Addrs {
			ip := netip.MustParseAddr(a.Addr)
			m[ip] = binding{DUID: c.DUID, Addr: ip, Preferred: a.Preferred, Valid: a.Valid}
		}
	}
	return m
}

// waitBindings polls the server until cond holds.
func (l *lab) waitBindings(t testing.TB, what string, timeout time.Duration, cond func(map[netip.Addr]binding) bool) map[netip.Addr]binding {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b := l.bindings(t)
		if cond(b) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("server bindings never showed %s within %v; have %v", what, timeout, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// wireMsg is one DHCPv6 message seen arriving at port 547.
type wireMsg struct {
	At       time.Time
	Src, Dst netip.Addr
	Type     dhcpv6.MessageType
	XID      dhcpv6.TransactionID
	// For ADDR-REG-INFORM: the IA Address it carries.
	IAAddr           netip.Addr
	Preferred, Valid uint32
	Msg              *dhcpv6.Message
}

func (m wireMsg) String() string {
	return fmt.Sprintf("%s %s %s→%s xid=%s ia=%s %d/%d", m.At.Format("15:04:05.000"), m.Type, m.Src, m.Dst, m.XID, m.IAAddr, m.Preferred, m.Valid)
}

// sniffer is a raw IPv6/UDP socket in a namespace: it sees a copy of every
// UDP datagram without taking it from the server's socket.
type sniffer struct {
	mu   sync.Mutex
	msgs []wireMsg
}

func startSniffer(t testing.TB, nd *topo.Node) *sniffer {
	t.Helper()
	var c *net.IPConn
	if err := nd.Do(func() error {
		pc, err := net.ListenPacket("ip6:udp", "::")
		if err != nil {
			return err
		}
		c = pc.(*net.IPConn)
		if err := ipv6.NewPacketConn(c).SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true); err != nil {
			return err
		}
		// Kernel receive timestamps: a busy test process reads late, and
		// retransmission spacing is asserted to a few tens of milliseconds.
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		}); err != nil {
			return err
		}
		return serr
	}); err != nil {
		t.Fatalf("sniffer: %v", err)
	}
	s := &sniffer{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		oob := make([]byte, 512)
		for {
			n, oobn, _, src, err := c.ReadMsgIP(buf, oob)
			if err != nil {
				return
			}
			at, dst, ok := parseSnifferCmsgs(oob[:oobn])
			if n < 8 || int(buf[2])<<8|int(buf[3]) != 547 || !ok {
				continue
			}
			m, err := dhcpv6.MessageFromBytes(buf[8:n])
			if err != nil {
				continue // Relay messages and garbage are not ours to record
			}
			srcIP, _ := netip.AddrFromSlice(src.IP)
			w := wireMsg{At: at, Src: srcIP.Unmap(), Dst: dst, Type: m.MessageType, XID: m.TransactionID, Msg: m}
			if opts := m.Options.Get(dhcpv6.OptionIAAddr); len(opts) > 0 {
				ia, _ := opts[0].(*dhcpv6.OptIAAddress)
				if ia == nil {
					continue
				}
				w.IAAddr, _ = netip.AddrFromSlice(ia.IPv6Addr)
				w.Preferred, w.Valid = uint32(ia.PreferredLifetime/time.Second), uint32(ia.ValidLifetime/time.Second)
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, w)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
		if t.Failed() {
			t.Logf("--- DHCPv6 messages seen at the server ---\n%s", s.dump())
		}
	})
	return s
}

// parseSnifferCmsgs returns the kernel's receive time and the destination
// address of a datagram; ok is false without the destination.
func parseSnifferCmsgs(oob []byte) (at time.Time, dst netip.Addr, ok bool) {
	at = time.Now()
	cms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return at, dst, false
	}
	for _, cm := range cms {
		switch {
		case cm.Header.Level == unix.SOL_SOCKET && cm.Header.Type == unix.SCM_TIMESTAMPNS && len(cm.Data) >= 16:
			// struct timespec on 64-bit Linux: tv_sec, tv_nsec.
			at = time.Unix(int64(binary.NativeEndian.Uint64(cm.Data)), int64(binary.NativeEndian.Uint64(cm.Data[8:])))
		case cm.Header.Level == unix.SOL_IPV6 && cm.Header.Type == unix.IPV6_PKTINFO && len(cm.Data) >= 16:
			dst, ok = netip.AddrFrom16([16]byte(cm.Data[:16])), true
		}
	}
	return at, dst, ok
}

func (s *sniffer) all() []wireMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]wireMsg(nil), s.msgs...)
}

func (s *sniffer) dump() string {
	var b strings.Builder
	for _, m := range s.all() {
		b.WriteString(m.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// informs returns the ADDR-REG-INFORMs for addr (all of them if addr is invalid).
func (s *sniffer) informs(addr netip.Addr) []wireMsg {
	var out []wireMsg
	for _, m := range s.all() {
		if m.Type == dhcpv6.MessageTypeAddrRegInform && (!addr.IsValid() || m.IAAddr == addr) {
			out = append(out, m)
		}
	}
	return out
}

func (s *sniffer) count(typ dhcpv6.MessageType) int {
	n := 0
	for _, m := range s.all() {
		if m.Type == typ {
			n++
		}
	}
	return n
}

// waitInforms polls until at least n INFORMs for addr have been seen.
func (s *sniffer) waitInforms(t testing.TB, addr netip.Addr, n int, timeout time.Duration) []wireMsg {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := s.informs(addr)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d ADDR-REG-INFORMs for %s within %v, want %d; seen:\n%s", len(got), addr, timeout, n, s.dump())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func addrOf(a netlink.Addr) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.IP)
	return ip.Unmap()
}
