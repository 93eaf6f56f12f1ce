package topo

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RA describes what radvd advertises on one interface.
type RA struct {
	Interface string // default "eth0"
	// Managed and Other are the M and O flags.
	Managed, Other bool
	// Interval is the maximum RA interval. Default 1 s: radvd allows
	// intervals under 4 s only with the Mobile IPv6 home-agent flag, which
	// this package sets (hosts ignore it).
	Interval       time.Duration
	RouterLifetime time.Duration // default 0: not a default router
	Prefixes       []PIO
}

// PIO is one Prefix Information Option.
type PIO struct {
	Prefix             string        // e.g. "2001:db8:1::/64"
	Valid, Preferred   time.Duration // rounded to seconds; Infinite for 0xffffffff
	NoAutonomous       bool          // clear the A flag (no SLAAC)
	NoOnLink           bool          // clear the L flag
	DecrementLifetimes bool          // radvd counts the lifetimes down in real time
}

// Infinite is the 0xffffffff lifetime.
const Infinite time.Duration = -1

// Radvd is a running radvd.
type Radvd struct {
	nd   *Node
	conf string
	proc *Proc
	pid  string
}

// StartRadvd writes a radvd config for ra and runs radvd in the node's
// namespace (with forwarding on, as radvd expects of a router). It waits
// until radvd is running.
func (nd *Node) StartRadvd(t testing.TB, ra RA) *Radvd {
	t.Helper()
	dir := t.TempDir()
	r := &Radvd{nd: nd, conf: filepath.Join(dir, "radvd.conf"), pid: filepath.Join(dir, "radvd.pid")}
	r.write(t, ra)
	nd.Sysctl(t, "net.ipv6.conf.all.forwarding", "1")
	r.proc = nd.Start(t, "radvd", "radvd", "--nodaemon", "--config", r.conf, "--pidfile", r.pid, "--logmethod", "stderr", "--debug", "1")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(r.pid); err == nil {
			return r
		}
		select {
		case <-r.proc.Done():
			t.Fatalf("radvd exited: %s", r.proc.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("radvd did not start within 5s: %s", r.proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Update rewrites the config and sends SIGHUP: radvd re-reads it and
// advertises the new values at once.
func (r *Radvd) Update(t testing.TB, ra RA) {
	t.Helper()
	r.write(t, ra)
	if err := r.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// Proc returns the radvd process (for its log).
func (r *Radvd) Proc() *Proc { return r.proc }

func (r *Radvd) write(t testing.TB, ra RA) {
	t.Helper()
	if err := os.WriteFile(r.conf, []byte(ra.Config()), 0o644); err != nil {
		t.Fatalf("write radvd config: %v", err)
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func lifetime(d time.Duration) string {
	if d == Infinite {
		return "infinity"
	}
	return fmt.Sprint(int64(d / time.Second))
}

// Config renders ra as radvd.conf text.
func (ra RA) Config() string {
	ifname := ra.Interface
	if ifname == "" {
		ifname = "eth0"
	}
	iv := ra.Interval
	if iv <= 0 {
		iv = time.Second
	}
	var b strings.Builder
	fmt.Fprintf(&b, "interface %s {\n", ifname)
	b.WriteString("\tAdvSendAdvert on;\n")
	// The home-agent flag lets radvd use sub-4-second intervals (RFC 6275 §7.5).
	b.WriteString("\tAdvHomeAgentFlag on;\n\tAdvHomeAgentInfo off;\n")
	fmt.Fprintf(&b, "\tMaxRtrAdvInterval %.2f;\n\tMinRtrAdvInterval %.2f;\n", iv.Seconds(), iv.Seconds()*0.75)
	fmt.Fprintf(&b, "\tAdvDefaultLifetime %d;\n", int64(ra.RouterLifetime/time.Second))
	fmt.Fprintf(&b, "\tAdvManagedFlag %s;\n\tAdvOtherConfigFlag %s;\n", onOff(ra.Managed), onOff(ra.Other))
	for _, p := range ra.Prefixes {
		fmt.Fprintf(&b, "\tprefix %s {\n", p.Prefix)
		fmt.Fprintf(&b, "\t\tAdvOnLink %s;\n\t\tAdvAutonomous %s;\n", onOff(!p.NoOnLink), onOff(!p.NoAutonomous))
		fmt.Fprintf(&b, "\t\tAdvValidLifetime %s;\n\t\tAdvPreferredLifetime %s;\n", lifetime(p.Valid), lifetime(p.Preferred))
		fmt.Fprintf(&b, "\t\tDecrementLifetimes %s;\n", onOff(p.DecrementLifetimes))
		b.WriteString("\t};\n")
	}
	b.WriteString("};\n")
	return b.String()
}
