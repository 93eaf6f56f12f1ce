package agent_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/dhcp6test"
	"github.com/addrreg/addrreg/test/topo"
)

// What the deployment guide (doc/deployment.md) says the network needs,
// run as it says it: an RA with the O flag from the guide's radvd
// configuration file, or no such RA and --require-ra-flags=false.

const radvdConf = "../doc/examples/radvd-addrreg.conf"

func TestE2EGuideNetwork(t *testing.T) {
	t.Run("radvd example with the O flag", func(t *testing.T) {
		l := newLab(t, labOpts{noRouter: true})
		dir := t.TempDir()
		conf := absPath(t, radvdConf)
		if fi, err := os.Stat(conf); err != nil || fi.Mode().Perm()&0o022 != 0 {
			// radvd refuses a configuration file others can write.
			t.Fatalf("%s: %v, mode %v", conf, err, fi.Mode())
		}
		l.router.Sysctl(t, "net.ipv6.conf.all.forwarding", "1")
		l.router.Start(t, "radvd", "radvd", "--nodaemon", "--config", conf, "--pidfile", filepath.Join(dir, "radvd.pid"),
			"--logmethod", "stderr", "--debug", "1")
		ip := addrOf(l.globals(t, 1)[0])
		p := l.startAgent(t)
		p.WaitOutput(t, "RA with M or O flag seen", 30*time.Second)
		l.waitBindings(t, ip.String(), 20*time.Second, func(b map[netip.Addr]dhcp6test.Binding) bool { _, ok := b[ip]; return ok })
	})
	t.Run("no M or O, --require-ra-flags=false", func(t *testing.T) {
		l := newLab(t, labOpts{ra: topo.RA{Prefixes: []topo.PIO{{Prefix: prefix1, Valid: 600 * time.Second, Preferred: 300 * time.Second}}}})
		ip := addrOf(l.globals(t, 1)[0])
		p := l.startAgent(t, "--require-ra-flags=false")
		l.waitBindings(t, ip.String(), 20*time.Second, func(b map[netip.Addr]dhcp6test.Binding) bool { _, ok := b[ip]; return ok })
		if logLines(p.Output(), "RA with M or O flag seen") != 0 {
			t.Errorf("the RA had neither M nor O, but the agent saw one")
		}
	})
}

// The troubleshooting table's "failed send" row: a host firewall rule that
// drops registrations on output makes sendmsg fail with EPERM, and the
// agent says so (discovery, from the link-local address, still passes).
func TestE2EGuideSendRefused(t *testing.T) {
	l := newLab(t, labOpts{})
	ip := addrOf(l.globals(t, 1)[0])
	l.host.MustExec(t, "nft", "add table inet guide")
	l.host.MustExec(t, "nft", "add chain inet guide out { type filter hook output priority 0 ; }")
	l.host.MustExec(t, "nft", "add rule inet guide out ip6 saddr "+prefix1+" udp dport 547 drop")
	p := l.startAgent(t, "--irt", "300ms")
	p.WaitOutput(t, "registration supported on link", 15*time.Second)
	p.WaitOutput(t, "registration failed", 20*time.Second)
	if n := logLines(p.Output(), `msg="registration failed"`, "addr="+ip.String()+" ", "operation not permitted"); n == 0 {
		t.Errorf("agent log has no \"registration failed\" for %s naming \"operation not permitted\"", ip)
	}
	for _, line := range strings.Split(p.Output(), "\n") {
		if strings.Contains(line, "registration failed") {
			t.Logf("%s", line)
		}
	}
}

// The guide shows each example file whole, in a fenced block: the text
// operators copy is the text the tests run.
func TestGuideShowsExampleFiles(t *testing.T) {
	guide, err := os.ReadFile("../doc/deployment.md")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("../doc/examples/*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example files: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(guide), "\n"+string(b)+"```\n") {
			t.Errorf("doc/deployment.md does not show %s as it is (in a fenced block)", filepath.Base(f))
		}
	}
}
