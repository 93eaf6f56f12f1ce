// Package topo builds throwaway IPv6 networks out of Linux network
// namespaces for end-to-end tests: a switch namespace holding a bridge, and
// one namespace per node (router, server, host, rogue, relay…) attached to it
// by a veth pair. Everything a test creates is removed in t.Cleanup, also
// when the test fails or panics; names carry a per-test random id so parallel
// test binaries never collide. It is test infrastructure, imported only by
// this module's tests (and test/dhcp6test), not a supported API.
//
// Tests share one kernel: the neighbour table (gc_thresh3 counts every
// namespace), conntrack and port ranges are common to all of them. A test
// that floods or fills such a resource owns it: it uses bounded resources
// of its own (a bounded set of sources, limits raised for it and restored),
// or it calls Exclusive before New and runs alone on the machine. Every
// topology (New) holds a machine-wide lock shared (flock in LockDir) until
// its test ends; Exclusive waits for those and keeps new ones waiting
// meanwhile (writer preference, across test binaries). So: Exclusive first
// in a test that needs it, t.Parallel before New.
//
//	topo.RequireRoot(t)
//	n := topo.New(t)
//	r, h := n.Node("router"), n.Node("host")
//	ra := r.StartRadvd(t, topo.RA{Managed: true, Prefixes: []topo.PIO{{Prefix: "2001:db8:1::/64", Valid: time.Minute, Preferred: 30 * time.Second}}})
//	h.WaitAddrs(t, "eth0", topo.Global, 10*time.Second)
//	ra.Update(t, newRA) // rewrite the config and SIGHUP radvd
package topo

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Prefix starts the name of every namespace, bridge and veth this package
// creates, so leftovers of a killed test binary can be found (see Sweep).
const Prefix = "ar"

// RequireRoot marks a test that needs root (network namespaces, raw
// sockets). It skips the test under -short (`make unit`: unit tests only,
// as root or not) and when not running as root, except under CI (CI=true),
// where a missing privilege is a failure: nothing is skipped silently
// there. `make test` runs without -short, so nothing is skipped by it.
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root and network namespaces: not run under -short (make unit)")
	}
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (network namespaces); CI must run it as root")
	}
	t.Skip("needs root for network namespaces: run `sudo make test`")
}

// QuickBench reports whether benchmarks should run their small workload:
// make test sets ADDRREG_BENCH_QUICK=1 and runs every benchmark once, so a
// benchmark that breaks fails the build without costing minutes. It is not
// -short, under which RequireRoot skips every namespace benchmark.
func QuickBench() bool { return os.Getenv("ADDRREG_BENCH_QUICK") == "1" }

// Net is one test's network: a switch namespace with bridges and the nodes
// attached to them.
type Net struct {
	t     testing.TB
	id    string
	sw    string // switch namespace
	swnd  *Node  // the switch namespace as a Node, for processes attached to its taps
	mu    sync.Mutex
	nodes []*Node
	segs  int
	veths int
}

// New creates the switch namespace and its main bridge, br0. Multicast
// snooping is off so ff02::1:2 reaches every port, like an unmanaged switch.
// The test holds the machine shared until its cleanup (see Exclusive): New
// waits while a test that fills a kernel table runs.
func New(t testing.TB) *Net {
	t.Helper()
	RequireRoot(t)
	holdShared(t) // released after teardown (cleanups run last-in first-out)
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random id: %v", err)
	}
	n := &Net{t: t, id: hex.EncodeToString(b[:])}
	n.sw = n.nsName("sw")
	n.swnd = &Node{Name: "switch", NS: n.sw, Net: n}
	t.Cleanup(n.teardown)
	mustRun(t, "ip", "netns", "add", n.sw)
	n.swExec(t, "ip", "link", "set", "lo", "up")
	n.addBridge(t, "br0")
	return n
}

func (n *Net) nsName(role string) string { return fmt.Sprintf("%s%s-%s", Prefix, n.id, role) }

// ID is the random part of every name this Net creates.
func (n *Net) ID() string { return n.id }

func (n *Net) swExec(t testing.TB, args ...string) string {
	t.Helper()
	return mustRun(t, append([]string{"ip", "netns", "exec", n.sw}, args...)...)
}

func (n *Net) addBridge(t testing.TB, name string) {
	t.Helper()
	n.swExec(t, "ip", "link", "add", name, "type", "bridge", "mcast_snooping", "0", "stp_state", "0", "forward_delay", "0")
	// The bridge itself takes no part in IPv6: no link-local, no DAD, no MLD.
	n.swExec(t, "sysctl", "-qw", "net.ipv6.conf."+name+".disable_ipv6=1")
	n.swExec(t, "ip", "link", "set", name, "up")
}

// Segment is an extra bridge in the switch namespace: a second link, for
// relay topologies.
type Segment struct {
	n      *Net
	Bridge string
}

// Segment adds another bridge (another link).
func (n *Net) Segment(name string) *Segment {
	n.t.Helper()
	n.mu.Lock()
	n.segs++
	br := fmt.Sprintf("br%d", n.segs)
	n.mu.Unlock()
	n.addBridge(n.t, br)
	return &Segment{n: n, Bridge: br}
}

// Main returns the main segment, br0.
func (n *Net) Main() *Segment { return &Segment{n: n, Bridge: "br0"} }

// Node creates a namespace named for role, with lo up and eth0 attached to
// the main bridge and up.
func (n *Net) Node(role string) *Node {
	n.t.Helper()
	nd := &Node{Name: role, NS: n.nsName(role), Net: n}
	mustRun(n.t, "ip", "netns", "add", nd.NS)
	n.mu.Lock()
	n.nodes = append(n.nodes, nd)
	n.mu.Unlock()
	nd.MustExec(n.t, "ip", "link", "set", "lo", "up")
	// Tests run many namespaces at once: keep each one's RA/DAD behaviour
	// at the kernel defaults, but make sure IPv6 is on.
	nd.Sysctl(n.t, "net.ipv6.conf.all.disable_ipv6", "0")
	n.Main().Attach(nd, "eth0")
	return nd
}

// Attach gives node an interface ifname on this segment and brings it up.
// It returns the name of the switch-side port (in the switch namespace),
// which tests can set down to cut the node's carrier.
func (s *Segment) Attach(nd *Node, ifname string) string {
	s.n.t.Helper()
	return s.attach(nd, ifname, "")
}

// attach is Attach, with the node's side given hardware address mac
// unless it is empty (the kernel picks a random one).
func (s *Segment) attach(nd *Node, ifname, mac string) string {
	n := s.n
	n.t.Helper()
	n.mu.Lock()
	n.veths++
	k := n.veths
	n.mu.Unlock()
	port := fmt.Sprintf("%s%sp%d", Prefix, n.id, k)  // switch side
	inner := fmt.Sprintf("%s%sn%d", Prefix, n.id, k) // renamed to ifname once inside
	mustRun(n.t, "ip", "link", "add", port, "netns", n.sw, "type", "veth", "peer", "name", inner, "netns", nd.NS)
	n.swExec(n.t, "sysctl", "-qw", "net.ipv6.conf."+port+".disable_ipv6=1")
	n.swExec(n.t, "ip", "link", "set", port, "master", s.Bridge, "up")
	if mac != "" {
		nd.MustExec(n.t, "ip", "link", "set", inner, "address", mac)
	}
	nd.MustExec(n.t, "ip", "link", "set", inner, "name", ifname)
	nd.MustExec(n.t, "ip", "link", "set", ifname, "up")
	nd.mu.Lock()
	if nd.ports == nil {
		nd.ports, nd.segs = map[string]string{}, map[string]*Segment{}
	}
	nd.ports[ifname], nd.segs[ifname] = port, s
	nd.mu.Unlock()
	return port
}

// attachment is the switch-side port and the segment of nd's ifname.
func (nd *Node) attachment(t testing.TB, ifname string) (string, *Segment) {
	t.Helper()
	nd.mu.Lock()
	defer nd.mu.Unlock()
	port, ok := nd.ports[ifname]
	if !ok {
		t.Fatalf("%s has no interface %s on a segment", nd.Name, ifname)
	}
	return port, nd.segs[ifname]
}

// Replug deletes nd's ifname (both ends of its veth) and creates it again
// with the same name and hardware address on the same segment, up: a USB
// NIC unplugged and plugged back, ip link del and add, a VM NIC
// hot-unplugged and re-added. The new link has a new ifindex, and nothing
// the kernel held on the old one (addresses, per-interface sysctls).
func (nd *Node) Replug(t testing.TB, ifname string) {
	t.Helper()
	_, seg := nd.attachment(t, ifname)
	fields := strings.Fields(nd.MustExec(t, "ip", "-o", "link", "show", "dev", ifname))
	i := slices.Index(fields, "link/ether")
	if i < 0 || i+1 >= len(fields) {
		t.Fatalf("%s: no hardware address in %q", ifname, fields)
	}
	nd.MustExec(t, "ip", "link", "del", ifname)
	seg.attach(nd, ifname, fields[i+1])
}

// AddTap adds a tap device named ifname to this segment, in the switch
// namespace: the NIC of a virtual machine that Switch().Start runs there
// (QEMU: -netdev tap,ifname=NAME,script=no,downscript=no). The tap goes
// with the switch namespace when the test ends.
func (s *Segment) AddTap(t testing.TB, ifname string) {
	t.Helper()
	n := s.n
	n.swExec(t, "ip", "tuntap", "add", "dev", ifname, "mode", "tap")
	n.swExec(t, "sysctl", "-qw", "net.ipv6.conf."+ifname+".disable_ipv6=1")
	n.swExec(t, "ip", "link", "set", ifname, "master", s.Bridge, "up")
}

// Switch returns the switch namespace as a Node, to run processes there
// (Start, Exec), such as a virtual machine on a tap of AddTap. It has no
// eth0; its processes are stopped when the test ends.
func (n *Net) Switch() *Node { return n.swnd }

// SwitchExec runs a command in the switch namespace (e.g. to set a port down
// and cut a node's carrier).
func (n *Net) SwitchExec(t testing.TB, args ...string) string {
	t.Helper()
	return n.swExec(t, args...)
}

// SetCarrier sets the switch-side port of nd's ifname up or down: nd sees
// its carrier (IFF_LOWER_UP) go down and come back, as with an unplugged cable.
func (nd *Node) SetCarrier(t testing.TB, ifname string, up bool) {
	t.Helper()
	port, _ := nd.attachment(t, ifname)
	state := "down"
	if up {
		state = "up"
	}
	nd.Net.swExec(t, "ip", "link", "set", port, state)
}

func (n *Net) teardown() {
	n.mu.Lock()
	nodes := append([]*Node(nil), n.nodes...)
	n.mu.Unlock()
	for i := len(nodes) - 1; i >= 0; i-- {
		nodes[i].stopAll()
	}
	n.swnd.stopAll()
	for _, nd := range nodes {
		if out, err := exec.Command("ip", "netns", "del", nd.NS).CombinedOutput(); err != nil {
			n.t.Logf("teardown: ip netns del %s: %v: %s", nd.NS, err, out)
		}
	}
	if out, err := exec.Command("ip", "netns", "del", n.sw).CombinedOutput(); err != nil {
		n.t.Logf("teardown: ip netns del %s: %v: %s", n.sw, err, out)
	}
}

// Sweep removes namespaces left behind by test binaries that were killed
// before their cleanups ran. Call it from TestMain only when no other test
// binary of this project is running (make test runs packages one at a time).
func Sweep() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], Prefix) || !strings.Contains(f[0], "-") {
			continue
		}
		_ = exec.Command("ip", "netns", "del", f[0]).Run()
	}
}

// Node is one namespace of the network.
type Node struct {
	Name string // role, e.g. "host"
	NS   string // namespace name
	Net  *Net

	mu    sync.Mutex
	procs []*Proc
	ports map[string]string   // ifname → its switch-side port
	segs  map[string]*Segment // ifname → its segment
}

// Exec runs a command inside the node's namespace and returns its combined output.
func (nd *Node) Exec(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", nd.NS}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s: %w: %s", nd.Name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// MustExec is Exec that fails the test on error.
func (nd *Node) MustExec(t testing.TB, args ...string) string {
	t.Helper()
	out, err := nd.Exec(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Sysctl sets a sysctl inside the node's namespace.
func (nd *Node) Sysctl(t testing.TB, key, val string) {
	t.Helper()
	nd.MustExec(t, "sysctl", "-qw", key+"="+val)
}

// Handle opens the node's namespace. The caller closes it.
func (nd *Node) Handle() (netns.NsHandle, error) {
	h, err := netns.GetFromName(nd.NS)
	if err != nil {
		return h, fmt.Errorf("open namespace %s: %w", nd.NS, err)
	}
	return h, nil
}

// Do runs fn on an OS thread switched into the node's namespace. Sockets
// opened by fn stay in that namespace after Do returns; goroutines started by
// fn do NOT inherit it (Go may run them on other threads), so open sockets
// and netlink handles inside fn and hand them out.
func (nd *Node) Do(fn func() error) error {
	target, err := nd.Handle()
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current namespace: %w", err)
			return // thread stays locked and is discarded
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter %s: %w", nd.NS, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: Go terminates it when this
			// goroutine exits, so no other goroutine runs in the
			// wrong namespace.
			errc <- fmt.Errorf("leave %s: %w (fn: %v)", nd.NS, err, ferr)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Addrs lists the IPv6 addresses on ifname in the node's namespace.
func (nd *Node) Addrs(ifname string) ([]netlink.Addr, error) {
	ns, err := nd.Handle()
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", nd.NS, err)
	}
	defer h.Close()
	link, err := h.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("%s: link %s: %w", nd.Name, ifname, err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		return nil, fmt.Errorf("%s: addresses of %s: %w", nd.Name, ifname, err)
	}
	return addrs, nil
}

// WaitAddrs polls until at least one address on ifname satisfies pred and
// returns all that do.
func (nd *Node) WaitAddrs(t testing.TB, ifname string, pred func(netlink.Addr) bool, timeout time.Duration) []netlink.Addr {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last []netlink.Addr
	for {
		addrs, err := nd.Addrs(ifname)
		if err != nil {
			t.Fatal(err)
		}
		last = last[:0]
		for _, a := range addrs {
			if pred(a) {
				last = append(last, a)
			}
		}
		if len(last) > 0 {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no matching address on %s within %v; have %v", nd.Name, ifname, timeout, addrs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Global matches a DAD-complete IPv6 address of global scope (ULA included).
func Global(a netlink.Addr) bool {
	const tentative, dadfailed = 0x40, 0x08
	return a.IP.To4() == nil && a.IP.IsGlobalUnicast() && a.Flags&(tentative|dadfailed) == 0
}

// LinkLocal matches a DAD-complete link-local address.
func LinkLocal(a netlink.Addr) bool {
	const tentative = 0x40
	return a.IP.IsLinkLocalUnicast() && a.Flags&tentative == 0
}

func (nd *Node) stopAll() {
	nd.mu.Lock()
	procs := append([]*Proc(nil), nd.procs...)
	nd.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop()
	}
}

func mustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out)
}
