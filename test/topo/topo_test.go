package topo_test

import (
	"net"
	"os"
	"os/exec"

	"strings"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/topo"
	"github.com/vishvananda/netlink"
)

// The smoke test of the harness: radvd in the router namespace advertises a
// prefix, the host forms a SLAAC address from it, and the lifetimes read
// over netlink are radvd's. Changing radvd's config at run time changes them.
func TestSmokeSLAAC(t *testing.T) {
	n := topo.New(t)
	router, host := n.Node("router"), n.Node("host")
	_, pfx, _ := net.ParseCIDR("2001:db8:1::/64")
	ra := topo.RA{Other: true, Prefixes: []topo.PIO{{Prefix: pfx.String(), Valid: 600 * time.Second, Preferred: 300 * time.Second}}}
	rd := router.StartRadvd(t, ra)

	inPrefix := func(a netlink.Addr) bool { return topo.Global(a) && pfx.Contains(a.IP) }
	got := host.WaitAddrs(t, "eth0", inPrefix, 15*time.Second)
	if len(got) != 1 {
		t.Fatalf("want one SLAAC address in %v, got %v", pfx, got)
	}
	a := got[0]
	// The kernel counts down from what the RA said; allow a few seconds.
	if a.ValidLft > 600 || a.ValidLft < 590 || a.PreferedLft > 300 || a.PreferedLft < 290 {
		t.Errorf("lifetimes valid=%d preferred=%d, want about 600/300", a.ValidLft, a.PreferedLft)
	}
	t.Logf("host SLAAC address %s valid %ds preferred %ds", a.IP, a.ValidLft, a.PreferedLft)

	ra.Prefixes[0].Valid, ra.Prefixes[0].Preferred = 900*time.Second, 450*time.Second
	rd.Update(t, ra)
	host.WaitAddrs(t, "eth0", func(a netlink.Addr) bool { return inPrefix(a) && a.ValidLft > 850 }, 10*time.Second)

	// Teardown is checked by TestTeardown below through the namespace list.
	if !strings.HasPrefix(host.NS, topo.Prefix+n.ID()) {
		t.Errorf("namespace %q does not carry the test id %q", host.NS, n.ID())
	}
}

// Carrier loss on the switch port is seen by the node as IFF_LOWER_UP going away.
func TestCarrier(t *testing.T) {
	n := topo.New(t)
	h := n.Node("host")
	lowerUp := func() bool {
		out := h.MustExec(t, "ip", "-o", "link", "show", "eth0")
		return strings.Contains(out, "LOWER_UP")
	}
	if !lowerUp() {
		t.Fatal("eth0 has no carrier at start")
	}
	h.SetCarrier(t, "eth0", false)
	if lowerUp() {
		t.Fatal("eth0 still LOWER_UP after its switch port went down")
	}
	h.SetCarrier(t, "eth0", true)
	if !lowerUp() {
		t.Fatal("eth0 has no carrier after its switch port came back")
	}
}

func TestTeardown(t *testing.T) {
	topo.RequireRoot(t)
	var id string
	t.Run("inner", func(t *testing.T) {
		n := topo.New(t)
		n.Node("a")
		id = n.ID()
	})
	list, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(list), id) {
		t.Fatalf("namespaces of test %s survive it:\n%s", id, list)
	}
}

// TestRequireRoot: under -short (make unit) a root-only test is skipped,
// as root or not; otherwise it runs as root.
func TestRequireRoot(t *testing.T) {
	ran := false
	t.Run("root-only", func(t *testing.T) {
		topo.RequireRoot(t)
		ran = true
	})
	if want := !testing.Short() && os.Geteuid() == 0; ran != want {
		t.Errorf("a root-only test ran = %v with -short=%v as uid %d, want %v", ran, testing.Short(), os.Geteuid(), want)
	}
}
