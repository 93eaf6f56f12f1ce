package agent_test

import (
	"encoding/hex"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/addrreg/addrreg/internal/refserver"
	"github.com/addrreg/addrreg/test/dhcp6test"
	"github.com/addrreg/addrreg/test/topo"
)

// The end-to-end lab: a router running radvd, a server namespace and a
// host running the real addrregd binary, joined by a bridge. A sniffer in
// the server's namespace records every DHCPv6 message that reaches port 547,
// so tests assert on the bytes on the wire; the server's bindings are read
// by leasequery with the reference server's own requestor (dhcp6test).

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
	sniff                *dhcp6test.Sniffer
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
	l.sniff = dhcp6test.StartSniffer(t, l.server, 547)
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
	args := append([]string{topo.BuildBinary(t, "./cmd/addrreg-refserver"), "--control-socket", topo.ControlSocket(t), "-i", "eth0",
		"--prefix", "eth0=" + prefix1, "--prefix", "eth0=" + ula1,
		"--db", l.dbPath, "--leasequery-allow", "::/0", "--log-level", "debug"}, extra...)
	l.refserver = l.server.Start(t, "refserver", args...)
	l.refserver.WaitOutput(t, "msg=listening", 10*time.Second)
	return l.refserver
}

// startAgent runs addrregd on the host with the test DUID and its state
// file and control socket in the test's temporary directories (never the
// system's); a --control-socket in args overrides the latter (the last
// occurrence of a flag wins).
func (l *lab) startAgent(t testing.TB, args ...string) *topo.Proc {
	t.Helper()
	argv := append([]string{topo.BuildBinary(t, "./cmd/addrregd"), "--control-socket", topo.ControlSocket(t), "-i", "eth0", "--duid", testDUID, "--log-level", "debug",
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
	argv := append([]string{"nice", "-n", "-20", topo.BuildBinary(t, "./cmd/addrregd"), "--control-socket", topo.ControlSocket(t), "-i", "eth0", "--duid", testDUID, "--log-level", "debug",
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

// query asks the reference server for the test client's bindings.
var query = refserver.QueryOptions{Server: netip.AddrPortFrom(netip.MustParseAddr(serverIP), 547), ClientID: must(hex.DecodeString(testDUID))}

// bindings asks the reference server, by leasequery for the test client's
// DUID from the server's namespace, which addresses it holds.
func (l *lab) bindings(t testing.TB) map[netip.Addr]dhcp6test.Binding {
	t.Helper()
	return dhcp6test.Bindings(t, l.server, query)
}

// waitBindings polls the server until cond holds.
func (l *lab) waitBindings(t testing.TB, what string, timeout time.Duration, cond func(map[netip.Addr]dhcp6test.Binding) bool) map[netip.Addr]dhcp6test.Binding {
	t.Helper()
	return dhcp6test.WaitBindings(t, l.server, query, what, timeout, cond)
}

func addrOf(a netlink.Addr) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.IP)
	return ip.Unmap()
}
