package agent_test

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/ndp"

	"github.com/addrreg/addrreg/test/dhcp6test"
	"github.com/addrreg/addrreg/test/topo"
)

// neighSysctl is a machine-wide neighbour-table limit (net.ipv6.neigh.default).
func neighSysctl(t *testing.T, name string) (string, int) {
	t.Helper()
	path := "/proc/sys/net/ipv6/neigh/default/" + name
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return path, v
}

// shrinkNeighTable lowers gc_thresh3 (the table's hard limit, machine-wide)
// to at most max and gc_thresh2 to at most max/2, and restores both in
// t.Cleanup. Only an exclusive test may do it: every namespace meets it.
func shrinkNeighTable(t *testing.T, max int) int {
	t.Helper()
	limit := max
	for _, k := range []struct {
		name string
		max  int
	}{{"gc_thresh3", max}, {"gc_thresh2", max / 2}} {
		path, old := neighSysctl(t, k.name)
		if old <= k.max {
			if k.name == "gc_thresh3" {
				limit = old
			}
			continue
		}
		if err := os.WriteFile(path, []byte(strconv.Itoa(k.max)), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := os.WriteFile(path, []byte(strconv.Itoa(old)), 0o644); err != nil {
				t.Errorf("restore %s=%d: %v", path, old, err)
			}
		})
	}
	return limit
}

// neighFlood keeps the machine's neighbour table full the way an RA flood
// does: RAs from sources distinct link-local sources, each with a Source
// Link-Layer Address option, over and over. The kernel makes a neighbour
// entry for every router it hears (in every namespace on the link), and
// each round gives every source a new hardware address, which refreshes its
// entry: the kernel's forced garbage collection never drops an entry
// updated in the last 5 s, so while the rounds come faster than that not
// one entry can be freed, and every other allocation fails (multicast
// destinations need one too).
type neighFlood struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	err  error
	sent int
}

func startNeighFlood(t *testing.T, inj *raInjector, sources int, round time.Duration) *neighFlood {
	f := &neighFlood{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		tick := time.NewTicker(round)
		defer tick.Stop()
		for r := 0; ; r++ {
			for i := range sources {
				src := netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 8: 0x02, 9: 0xf1, 14: byte(i >> 8), 15: byte(i)})
				mac := net.HardwareAddr{0x02, 0xf1, byte(r >> 8), byte(r), byte(i >> 8), byte(i)}
				// The O flag as the real router sends it: the kernel's
				// M/O flags are the last RA's (IF_RA_OTHERCONF), and the
				// router's own RAs cannot get out of a full table, so
				// forged RAs without it would pause registration (no
				// RA flags) instead of letting sends be refused.
				err := inj.sendRA(src, 255, &ndp.RouterAdvertisement{
					CurrentHopLimit:    64,
					OtherConfiguration: true,
					Options:            []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}},
				})
				f.mu.Lock()
				f.sent++
				if err != nil && f.err == nil {
					f.err = err
				}
				f.mu.Unlock()
				if err != nil {
					return
				}
			}
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { f.Stop(t) }) })
	return f
}

// Stop ends the flood and waits for its goroutine.
func (f *neighFlood) Stop(t *testing.T) {
	t.Helper()
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		t.Errorf("flood: %v", f.err)
	}
}

// A host whose neighbour table is full (here: an RA flood on the link, the
// machine's table shared by every namespace) cannot send: sendmsg fails
// with EINVAL, even to ff02::1:2. addrregd keeps every registration it had
// (a refused send is a lost transmission, never a reason to drop one),
// shows the refusals by errno in its metrics and status, and once the
// flood stops and the table drains, registers what came due meanwhile
// within seconds (issue 20).
func TestE2ENeighTableFull(t *testing.T) {
	// The test fills the one neighbour table every namespace on the machine
	// uses: nothing else may run meanwhile (STYLE.md point 14).
	topo.Exclusive(t)
	l := newLab(t, labOpts{})
	slaac := addrOf(l.globals(t, 1)[0])
	static, late := netip.MustParseAddr("2001:db8:1::10"), netip.MustParseAddr("2001:db8:1::20")
	l.host.MustExec(t, "ip", "-6", "addr", "add", static.String()+"/64", "dev", "eth0", "nodad")
	const agentMetrics = "[::1]:9547"
	sock := filepath.Join(t.TempDir(), "control.sock")
	p := l.startAgent(t, "--control-socket", sock, "--metrics-listen", agentMetrics,
		"--irt", "300ms", "--retry-first", "1s", "--retry-max", "2s")
	before := l.waitBindings(t, "both addresses", 15*time.Second, dhcp6test.HoldsAll(slaac, static))
	inj := newRAInjector(t, l.router)

	// A table of 1,024 (the kernel's default) and 1,024 sources heard in
	// two namespaces (host and server, both on the link): full in a
	// moment, and kept full by rounds every second.
	limit := shrinkNeighTable(t, 1024)
	stats0 := topo.ReadNeighStats(t)
	flood := startNeighFlood(t, inj, limit, time.Second)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if s := topo.ReadNeighStats(t); s.Entries >= limit && s.TableFulls > stats0.TableFulls {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the flood did not fill the neighbour table of %d within 15 s: %+v", limit, topo.ReadNeighStats(t))
		}
	}
	full := time.Now()
	t.Logf("neighbour table full after the flood's first round: %+v; host has %d entries, server %d",
		topo.ReadNeighStats(t), l.host.Neighbours(t, "eth0"), l.server.Neighbours(t, "eth0"))

	// An address comes due while the table is full: its sends are refused.
	// A full table refuses nearly every send, not quite all: forced
	// collection frees any multicast (NOARP) entry nobody holds, of any
	// namespace, whatever its age, and an allocation then finds room. So
	// one of the late address's transmissions may go out and be answered
	// during the flood; what must hold either way is below.
	l.host.MustExec(t, "ip", "-6", "addr", "add", late.String()+"/64", "dev", "eth0", "nodad")
	refused := `msg="send refused: counted as a lost transmission"`
	p.WaitOutput(t, refused, 20*time.Second)
	if n := logLines(p.Output(), refused, "addr="+late.String()+" ", "invalid argument"); n == 0 {
		t.Errorf("no refused send for %s naming \"invalid argument\" (EINVAL):\n%s", late, p.Output())
	}
	am := l.host.Scrape(t, agentMetrics)
	if v, _ := topo.MetricValue(am, `addrregd_send_errors_total{errno="EINVAL"}`); v < 1 {
		t.Errorf(`addrregd_send_errors_total{errno="EINVAL"} = %v during the full table, want >= 1`, v)
	}
	doc := waitStatus(t, sock, "the refused address's last error (or its registration)", func(d statusDoc) bool {
		for _, ifc := range d.Interfaces {
			for _, a := range ifc.Addresses {
				if a.Address == late.String() && (strings.Contains(a.LastError, "invalid argument") || a.Phase == "registered") {
					return true
				}
			}
		}
		return false
	})
	if ph := phases(doc); ph[slaac] != "registered" || ph[static] != "registered" {
		t.Errorf("status during the full table: %s %q, %s %q; want both registered", slaac, ph[slaac], static, ph[static])
	}
	text, _ := runStatus(t, "--control-socket", sock, "-i", "eth0")
	t.Logf("addrregd status while the table is full:\n%s", text)

	// Keep it full a while: what the server had, it still has: nothing
	// was deregistered or lost, whatever was refused.
	for time.Since(full) < 8*time.Second {
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d exchanges for %s failed while the table was full", logLines(p.Output(), `msg="registration failed"`, "addr="+late.String()+" "), late)
	during := l.bindings(t)
	for a, b := range before {
		if got, ok := during[a]; !ok || got.DUID != b.DUID {
			t.Errorf("the server lost %s (%+v) while the host's table was full: %+v", a, b, got)
		}
	}
	// An INFORM that found room may have reached the server although its
	// reply, refused in turn, never came back: addrregd then counts the
	// exchange failed and retries.
	informs := len(l.sniff.Informs(late))
	_, serverHas := during[late]
	stats1 := topo.ReadNeighStats(t)
	if stats1.Entries < limit {
		t.Errorf("the table drained during the flood (%+v): the test did not hold it full", stats1)
	}
	held := time.Since(full)
	flood.Stop(t)
	stopped := time.Now()
	latePhase := func(d statusDoc) string { return phases(d)[late] }
	phaseAtStop := latePhase(waitStatus(t, sock, "a status", func(statusDoc) bool { return true }))

	// The table drains (entries older than 5 s can go) and the late
	// address is registered at the next retry: the server holds it and
	// addrregd had its reply.
	l.waitBindings(t, late.String()+" after the flood", 30*time.Second, dhcp6test.HoldsAll(slaac, static, late))
	waitStatus(t, sock, late.String()+" registered", func(d statusDoc) bool { return latePhase(d) == "registered" })
	took := time.Since(stopped)
	stats2 := topo.ReadNeighStats(t)
	t.Logf("table full for %v (table_fulls %d → %d, %d while full); meanwhile %d INFORMs for %s got through, the server held it: %v, its phase when the flood stopped: %s; registered %v after the flood stopped; table now %d entries",
		held.Round(time.Millisecond), stats0.TableFulls, stats1.TableFulls, stats1.TableFulls-stats0.TableFulls,
		informs, late, serverHas, phaseAtStop, took.Round(time.Millisecond), stats2.Entries)
	if took > 15*time.Second {
		t.Errorf("%s registered %v after the flood stopped, want within 15 s", late, took)
	}
	after := l.bindings(t)
	for a, b := range before {
		if got, ok := after[a]; !ok || got.DUID != b.DUID {
			t.Errorf("the server lost %s (%+v) after the flood: %+v", a, b, got)
		}
	}
	am = l.host.Scrape(t, agentMetrics)
	v, _ := topo.MetricValue(am, `addrregd_send_errors_total{errno="EINVAL"}`)
	t.Logf(`addrregd_send_errors_total{errno="EINVAL"} = %v`, v)
}
