package agent_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/test/dhcp6test"
	"github.com/addrreg/addrreg/test/topo"
)

// What an operator sees (issue 11): `addrregd status`, the metrics
// endpoints, journald priorities, the privacy knob and the server's
// history, each asserted against the real binaries in namespaces.

// statusDoc is the part of doc/status.md the tests read.
type statusDoc struct {
	Schema int `json:"schema"`
	Daemon struct {
		PID               int    `json:"pid"`
		DUID              string `json:"duid"`
		RegisterTemporary bool   `json:"register_temporary"`
	} `json:"daemon"`
	Queued     int `json:"queued"`
	Interfaces []struct {
		Name   string `json:"name"`
		State  string `json:"state"`
		Server *struct {
			Address string `json:"address"`
			DUID    string `json:"duid"`
		} `json:"server"`
		Addresses []struct {
			Address        string    `json:"address"`
			Kind           string    `json:"kind"`
			Phase          string    `json:"phase"`
			LastRegistered time.Time `json:"last_registered"`
			LastError      string    `json:"last_error"`
			Told           *struct {
				Preferred uint32 `json:"preferred"`
				Valid     uint32 `json:"valid"`
			} `json:"told"`
		} `json:"addresses"`
	} `json:"interfaces"`
}

// runStatus runs `addrregd status` and returns its output and exit status.
func runStatus(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(topo.BuildBinary(t, "./cmd/addrregd"), append([]string{"status"}, args...)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("addrregd status: %v", err)
	return "", -1
}

// waitStatus polls `addrregd status --json` until cond holds.
func waitStatus(t *testing.T, sock, what string, cond func(statusDoc) bool) statusDoc {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, code := runStatus(t, "--json", "--control-socket", sock)
		var doc statusDoc
		if code == 0 {
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("status --json output is not JSON: %v\n%s", err, out)
			}
			if cond(doc) {
				return doc
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed %s; last (exit %d):\n%s", what, code, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func phases(doc statusDoc) map[netip.Addr]string {
	m := map[netip.Addr]string{}
	for _, ifc := range doc.Interfaces {
		for _, a := range ifc.Addresses {
			m[netip.MustParseAddr(a.Address)] = a.Phase
		}
	}
	return m
}

func isTemporary(a netlink.Addr) bool { return a.Flags&unix.IFA_F_TEMPORARY != 0 }

// `addrregd status --json` shows as registered exactly the addresses the
// server holds; both daemons' metrics pass promtool and count the
// registrations; a stopped daemon's status exits 3.
func TestE2EStatusMetrics(t *testing.T) {
	const agentMetrics, serverMetrics = "[::1]:9547", "[::1]:9548"
	l := newLab(t, labOpts{tempaddr: true, serverArg: []string{"--metrics-listen", serverMetrics, "--control-socket", ""}})
	addrs := l.globals(t, 2) // stable and temporary
	before := l.server.Scrape(t, serverMetrics)
	topo.CheckMetrics(t, before)
	reg0, _ := topo.MetricValue(before, `addrreg_refserver_registrations_total{event="register"}`)

	sock := filepath.Join(t.TempDir(), "control.sock")
	p := l.startAgent(t, "--control-socket", sock, "--metrics-listen", agentMetrics)
	b := l.waitBindings(t, "every global address", 15*time.Second, func(b map[netip.Addr]dhcp6test.Binding) bool {
		for _, a := range addrs {
			if _, ok := b[addrOf(a)]; !ok {
				return false
			}
		}
		return true
	})
	doc := waitStatus(t, sock, "every bound address registered", func(d statusDoc) bool {
		ph := phases(d)
		for ip := range b {
			if ph[ip] != "registered" {
				return false
			}
		}
		return true
	})
	registered := map[netip.Addr]bool{}
	for ip, ph := range phases(doc) {
		if ph == "registered" {
			registered[ip] = true
		}
	}
	for ip := range b {
		if !registered[ip] {
			t.Errorf("server holds %s, status does not show it registered", ip)
		}
	}
	for ip := range registered {
		if _, ok := b[ip]; !ok {
			t.Errorf("status shows %s registered, the server does not hold it", ip)
		}
	}
	if doc.Schema != 1 || doc.Daemon.DUID != testDUID || doc.Daemon.PID == 0 || !doc.Daemon.RegisterTemporary {
		t.Errorf("daemon section: %+v (schema %d)", doc.Daemon, doc.Schema)
	}
	if len(doc.Interfaces) != 1 || doc.Interfaces[0].Name != "eth0" || doc.Interfaces[0].State != "supported" {
		t.Fatalf("interfaces: %+v", doc.Interfaces)
	}
	ifc := doc.Interfaces[0]
	// The last answer was an ADDR-REG-REPLY, unicast from the server's
	// own address (RFC 9686 §4.3).
	if ifc.Server == nil || ifc.Server.DUID == "" || ifc.Server.Address != serverIP {
		t.Errorf("server that answered: %+v, want %s and its DUID", ifc.Server, serverIP)
	}
	kinds := map[netip.Addr]string{}
	for _, a := range ifc.Addresses {
		kinds[netip.MustParseAddr(a.Address)] = a.Kind
		if a.Phase == "registered" && (a.LastRegistered.IsZero() || a.Told == nil || a.Told.Valid == 0 || a.Told.Valid > 600) {
			t.Errorf("registered address %s: last_registered %v, told %+v", a.Address, a.LastRegistered, a.Told)
		}
	}
	for _, a := range addrs {
		want := "stable"
		if isTemporary(a) {
			want = "temporary"
		}
		if got := kinds[addrOf(a)]; got != want {
			t.Errorf("%s: kind %q, want %q", addrOf(a), got, want)
		}
	}
	text, code := runStatus(t, "--control-socket", sock, "-i", "eth0")
	if code != 0 || !strings.Contains(text, "registered") || !strings.Contains(text, addrOf(addrs[0]).String()) {
		t.Errorf("status (exit %d):\n%s", code, text)
	}
	t.Logf("addrregd status:\n%s", text)
	if out, code := runStatus(t, "--control-socket", sock, "-i", "nosuch0"); code != 1 {
		t.Errorf("status -i nosuch0: exit %d, want 1: %s", code, out)
	}

	// Metrics: promtool accepts both endpoints, and the registrations
	// moved the counters.
	am := l.host.Scrape(t, agentMetrics)
	topo.CheckMetrics(t, am)
	for series, min := range map[string]float64{
		`addrregd_exchanges_replied_total`:                         float64(len(addrs)),
		`addrregd_exchanges_started_total{kind="register"}`:        float64(len(addrs)),
		`addrregd_replies_accepted_total`:                          float64(len(addrs)),
		`addrregd_probes_total{outcome="supported"}`:               1,
		`addrregd_addresses{iface="eth0",phase="registered"}`:      float64(len(addrs)),
		`addrregd_interface_state{iface="eth0",state="supported"}`: 1,
		`addrregd_transmissions_total`:                             float64(len(addrs)),
		`addrregd_agent_up`:                                        1,
	} {
		if v, ok := topo.MetricValue(am, series); !ok || v < min {
			t.Errorf("addrregd metric %s = %v (present %v), want >= %v", series, v, ok, min)
		}
	}
	for _, series := range []string{`addrregd_pacing_queue_length`, `addrregd_netlink_resyncs_total`,
		`addrregd_replies_dropped_total{reason="transaction-id"}`, `addrregd_exchange_failures_total`} {
		if _, ok := topo.MetricValue(am, series); !ok {
			t.Errorf("addrregd metrics lack %s", series)
		}
	}
	sm := l.server.Scrape(t, serverMetrics)
	topo.CheckMetrics(t, sm)
	if v, _ := topo.MetricValue(sm, `addrreg_refserver_registrations_total{event="register"}`); v < reg0+float64(len(addrs)) {
		t.Errorf("refserver registrations went from %v to %v, want +%d", reg0, v, len(addrs))
	}
	if v, _ := topo.MetricValue(sm, `addrreg_refserver_commit_duration_seconds_count`); v < 1 {
		t.Errorf("refserver commit histogram count %v, want >= 1", v)
	}
	// Every durable reply's stages, from the kernel's receive timestamp.
	if v, _ := topo.MetricValue(sm, `addrreg_refserver_reply_stage_seconds_count{stage="total"}`); v < float64(len(addrs)) {
		t.Errorf("refserver reply stage histogram count %v, want >= %d", v, len(addrs))
	}
	if _, ok := topo.MetricValue(sm, `addrreg_refserver_rejects_total{reason="address_mismatch"}`); !ok {
		t.Errorf("refserver metrics lack the rejects by reason")
	}
	l.bindings(t) // a leasequery
	if v, _ := topo.MetricValue(l.server.Scrape(t, serverMetrics), `addrreg_refserver_leasequeries_total`); v < 1 {
		t.Errorf("refserver leasequeries %v after leasequeries, want >= 1", v)
	}

	// Stopped: exit 3, and the socket is gone.
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(t, 5*time.Second); err != nil {
		t.Fatalf("addrregd: %v", err)
	}
	if out, code := runStatus(t, "--control-socket", sock); code != 3 {
		t.Errorf("status of a stopped daemon: exit %d, want 3: %s", code, out)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
}

// --register-temporary=false: the server gets the stable address and never
// the temporary one, which status shows pending.
func TestE2ERegisterTemporaryFalse(t *testing.T) {
	l := newLab(t, labOpts{tempaddr: true})
	addrs := l.globals(t, 2)
	var stable, temp []netip.Addr
	for _, a := range addrs {
		if isTemporary(a) {
			temp = append(temp, addrOf(a))
		} else {
			stable = append(stable, addrOf(a))
		}
	}
	if len(stable) == 0 || len(temp) == 0 {
		t.Fatalf("want stable and temporary addresses, have %v", addrs)
	}
	sock := filepath.Join(t.TempDir(), "control.sock")
	l.startAgent(t, "--register-temporary=false", "--control-socket", sock)
	l.waitBindings(t, "the stable addresses", 30*time.Second, func(b map[netip.Addr]dhcp6test.Binding) bool {
		for _, ip := range stable {
			if _, ok := b[ip]; !ok {
				return false
			}
		}
		return true
	})
	doc := waitStatus(t, sock, "the temporary addresses known", func(d statusDoc) bool {
		ph := phases(d)
		for _, ip := range temp {
			if _, ok := ph[ip]; !ok {
				return false
			}
		}
		return true
	})
	for _, ip := range temp {
		if ph := phases(doc)[ip]; ph != "pending" {
			t.Errorf("temporary %s is %s in status, want pending", ip, ph)
		}
	}
	if doc.Daemon.RegisterTemporary {
		t.Error("status says register_temporary true")
	}
	// Give a wrongly sent INFORM time to arrive, then look at the server
	// and at the wire.
	time.Sleep(2 * time.Second)
	b := l.bindings(t)
	for _, ip := range temp {
		if _, ok := b[ip]; ok {
			t.Errorf("server holds temporary address %s", ip)
		}
		if n := len(l.sniff.Informs(ip)); n > 0 {
			t.Errorf("%d ADDR-REG-INFORMs for temporary address %s on the wire", n, ip)
		}
	}
}

// Under systemd (JOURNAL_STREAM names stderr) every line carries its
// syslog priority and no timestamp; with a JOURNAL_STREAM that names
// another stream, lines are plain and stamped.
func TestE2EJournalPriorities(t *testing.T) {
	l := newLab(t, labOpts{})
	l.globals(t, 1)
	bin := topo.BuildBinary(t, "./cmd/addrregd")
	for _, match := range []bool{true, false} {
		t.Run(fmt.Sprintf("matching=%v", match), func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var st unix.Stat_t
			if err := unix.Fstat(int(f.Fd()), &st); err != nil {
				t.Fatal(err)
			}
			ino := st.Ino
			if !match {
				ino++ // another stream: stderr was redirected away from the journal
			}
			// An unusable control socket path: its error line must be <3>.
			cmd := exec.Command("ip", "netns", "exec", l.host.NS, bin, "-i", "eth0", "--duid", testDUID,
				"--control-socket", "/proc/no-such-dir/control.sock", "--state-file", filepath.Join(t.TempDir(), "state.json"))
			cmd.Env = append(os.Environ(), fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, ino))
			cmd.Stdout, cmd.Stderr = f, f
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				<-done
			})
			var out string
			for deadline := time.Now().Add(15 * time.Second); ; {
				b, _ := os.ReadFile(f.Name())
				out = string(b)
				if strings.Contains(out, "msg=registered") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no registration logged:\n%s", out)
				}
				time.Sleep(100 * time.Millisecond)
			}
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
				done <- nil
			case <-time.After(5 * time.Second):
				t.Fatal("addrregd did not stop")
			}
			b, _ := os.ReadFile(f.Name())
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			for _, ln := range lines {
				prefixed := strings.HasPrefix(ln, "<")
				if prefixed != match {
					t.Errorf("JOURNAL_STREAM matching=%v: line %q", match, ln)
				}
				if stamped := strings.HasPrefix(ln, "time="); stamped == match {
					t.Errorf("JOURNAL_STREAM matching=%v: timestamp wrong on %q", match, ln)
				}
			}
			if match {
				for prio, msg := range map[string]string{"<3>": "control socket unavailable", "<6>": "msg=registered"} {
					found := false
					for _, ln := range lines {
						found = found || (strings.HasPrefix(ln, prio) && strings.Contains(ln, msg))
					}
					if !found {
						t.Errorf("no %s line with %q:\n%s", prio, msg, b)
					}
				}
			}
		})
	}
}

// "Who held 2001:db8:1::99 at 14:03": after the address moved from one
// client to another, history --at names the DUID that held it at each time.
func TestE2EHistoryWhoHeldAt(t *testing.T) {
	sockRS := filepath.Join(t.TempDir(), "refserver.sock")
	l := newLab(t, labOpts{serverArg: []string{"--control-socket", sockRS}})
	l.globals(t, 1)
	moved := netip.MustParseAddr("2001:db8:1::99")
	l.host.MustExec(t, "ip", "-6", "addr", "add", moved.String()+"/64", "dev", "eth0", "nodad")
	const duidB = "0004ffeeddccbbaa99887766554433221100"
	rs := topo.BuildBinary(t, "./cmd/addrreg-refserver")
	holder := func() string {
		out, err := l.server.Exec(rs, "query", "--address", moved.String(), "--server", serverIP, "--json")
		if err != nil {
			return ""
		}
		var r struct {
			Clients []struct {
				DUID string `json:"duid"`
			} `json:"clients"`
		}
		if json.Unmarshal([]byte(out), &r) != nil || len(r.Clients) != 1 {
			return ""
		}
		return r.Clients[0].DUID
	}
	waitHolder := func(want string) time.Time {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); ; {
			if holder() == want {
				return time.Now()
			}
			if time.Now().After(deadline) {
				t.Fatalf("the server never showed %s held by %s (holder %q)", moved, want, holder())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	agentA := l.startAgent(t, "--control-socket", "")
	tA := waitHolder(testDUID)
	if err := agentA.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := agentA.Wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	bin := topo.BuildBinary(t, "./cmd/addrregd")
	l.host.Start(t, "addrregd-b", bin, "-i", "eth0", "--duid", duidB, "--control-socket", "",
		"--state-file", filepath.Join(t.TempDir(), "state-b.json"))
	tB := waitHolder(duidB)

	heldAt := func(at time.Time) string {
		t.Helper()
		out, err := exec.Command(rs, "history", "--control-socket", sockRS, "--address", moved.String(),
			"--at", at.Format(time.RFC3339Nano), "--json").CombinedOutput()
		if err != nil {
			t.Fatalf("history: %v\n%s", err, out)
		}
		var r struct {
			Held   bool `json:"held"`
			Holder struct {
				DUID  string    `json:"duid"`
				Since time.Time `json:"since"`
			} `json:"holder"`
		}
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("history --json: %v\n%s", err, out)
		}
		return r.Holder.DUID
	}
	if got := heldAt(tA); got != testDUID {
		t.Errorf("history --at %s (while client A held it) names %q, want %s", tA.Format(time.RFC3339Nano), got, testDUID)
	}
	if got := heldAt(tB); got != duidB {
		t.Errorf("history --at %s (after the move) names %q, want %s", tB.Format(time.RFC3339Nano), got, duidB)
	}
	if got := heldAt(tA.Add(-time.Hour)); got != "" {
		t.Errorf("history --at an hour before names %q, want nobody", got)
	}
	text, err := exec.Command(rs, "history", "--control-socket", sockRS, "--address", moved.String(),
		"--at", tA.Format(time.RFC3339Nano)).CombinedOutput()
	if err != nil || !strings.Contains(string(text), testDUID) {
		t.Errorf("history table: %v\n%s", err, text)
	}
	t.Logf("history --at:\n%s", text)
	events, err := exec.Command(rs, "history", "--control-socket", sockRS, "--client-id", duidB).CombinedOutput()
	if err != nil || !strings.Contains(string(events), "move") || !strings.Contains(string(events), testDUID) {
		t.Errorf("history --client-id B should show the move from A: %v\n%s", err, events)
	}
	t.Logf("history --client-id:\n%s", events)
}
