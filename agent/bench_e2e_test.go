package agent_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/test/proctest"
	"github.com/addrreg/addrreg/test/topo"
)

// End-to-end performance of addrregd (issue 5, "Performance"). These are
// benchmarks for their metrics, not their ns/op: each run builds a lab and
// measures a fixed workload once. Run them with
//
//	sudo go test ./agent -run '^$' -bench BenchmarkE2E -benchtime 1x -v
//
// and read the b.ReportMetric columns.

// unlimitedServer lifts the reference server's rate limits (per source
// address and per DUID) and its per-DUID binding limit (the agent
// registers up to 10,000 addresses with one DUID) so the server never
// throttles the agent under test.
var unlimitedServer = []string{"--rate", "0", "--rate-duid", "0", "--max-bindings-per-duid", "20000",
	"--log-level", "info", "--no-registration-log"}

// benchAddr returns the i-th benchmark address in prefix1. Its low 24 bits
// are constant, so all share one solicited-node group: adding thousands of
// them costs one MLD join, not thousands.
func benchAddr(i int) netip.Addr {
	b := netip.MustParsePrefix(prefix1).Addr().As16()
	binary.BigEndian.PutUint64(b[8:], uint64(i+1)<<24|0x1)
	return netip.AddrFrom16(b)
}

// BenchmarkE2ERegistrationLatency measures the time from a DAD-complete
// address appearing (static, nodad) to its first ADDR-REG-INFORM on the
// wire, over 200 addresses (or b.N if larger):
//
//   - one-at-a-time: each address is added after the previous one's INFORM
//     was seen: the agent's reaction time, unloaded;
//   - batch: all are added at once, as in a renumbering: pacing shows.
//
// Two latencies per address: add→wire from just before the netlink request
// that adds it (an upper bound), and event→wire from the RTM_NEWADDR the
// test receives in the host namespace (a lower bound: the test reads the
// event a little late). Wire times are the sniffer's kernel timestamps.
func BenchmarkE2ERegistrationLatency(b *testing.B) {
	for _, mode := range []string{"one-at-a-time", "batch"} {
		for _, pace := range []struct {
			name string
			args []string
		}{
			{"rate=10000", []string{"--rate", "10000", "--burst", "1000"}},
			{"rate=default", nil},
		} {
			b.Run(mode+"/"+pace.name, func(b *testing.B) {
				benchLatency(b, mode == "batch", pace.args)
			})
		}
	}
}

func benchLatency(b *testing.B, batch bool, agentArgs []string) {
	n := max(b.N, 200)
	l := newLab(b, labOpts{serverArg: unlimitedServer})
	slaac := addrOf(l.globals(b, 1)[0])
	p := l.startAgent(b, append([]string{"--log-level", "info"}, agentArgs...)...)
	l.sniff.WaitInforms(b, slaac, 1, 15*time.Second)

	events := subscribeNewAddr(b, l.host)
	h := hostHandle(b, l.host)
	link, err := h.LinkByName("eth0")
	if err != nil {
		b.Fatal(err)
	}
	added := make(map[netip.Addr]time.Time, n)
	add := func(ip netip.Addr) {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
		added[ip] = time.Now()
		if err := h.AddrAdd(link, a); err != nil {
			b.Fatalf("add %s: %v", ip, err)
		}
	}
	if batch {
		for i := range n {
			add(benchAddr(i))
		}
		for i := range n {
			l.sniff.WaitInforms(b, benchAddr(i), 1, 30*time.Second)
		}
	} else {
		for i := range n {
			add(benchAddr(i))
			l.sniff.WaitInforms(b, benchAddr(i), 1, 10*time.Second)
		}
	}

	var fromAdd, fromEvent []time.Duration
	for i := range n {
		ip := benchAddr(i)
		wire := l.sniff.Informs(ip)[0].At
		fromAdd = append(fromAdd, wire.Sub(added[ip]))
		ev, ok := events.at(ip)
		if !ok {
			b.Fatalf("no RTM_NEWADDR seen for %s", ip)
		}
		fromEvent = append(fromEvent, wire.Sub(ev))
	}
	if f := strings.Count(p.Output(), `msg="registration failed"`); f != 0 {
		b.Errorf("%d registrations failed during the benchmark", f)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(quantile(fromEvent, 0.5)), "event-median-ms")
	b.ReportMetric(ms(quantile(fromEvent, 0.99)), "event-p99-ms")
	b.ReportMetric(ms(quantile(fromAdd, 0.5)), "add-median-ms")
	b.ReportMetric(ms(quantile(fromAdd, 0.99)), "add-p99-ms")
	b.ReportMetric(float64(n), "addresses")
	b.ReportMetric(0, "ns/op") // one workload per run: ns/op means nothing here
	b.Logf("%d addresses: RTM_NEWADDR→wire median %v p99 %v max %v; add→wire median %v p99 %v max %v",
		n, quantile(fromEvent, 0.5), quantile(fromEvent, 0.99), quantile(fromEvent, 1),
		quantile(fromAdd, 0.5), quantile(fromAdd, 0.99), quantile(fromAdd, 1))
}

// quantile returns the q-quantile (nearest rank) of ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// newAddrEvents records when the test received each address's first
// RTM_NEWADDR without the tentative flag.
type newAddrEvents struct {
	mu   sync.Mutex
	seen map[netip.Addr]time.Time
}

func (e *newAddrEvents) at(ip netip.Addr) (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.seen[ip]
	return t, ok
}

func subscribeNewAddr(b *testing.B, nd *topo.Node) *newAddrEvents {
	b.Helper()
	ns, err := nd.Handle()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ns.Close() })
	ch := make(chan netlink.AddrUpdate, 4096)
	done := make(chan struct{})
	if err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
		Namespace: &ns, ReceiveBufferSize: 8 << 20,
		ErrorCallback: func(err error) {
			select {
			case <-done: // closing the subscription makes its receive fail
			default:
				b.Errorf("address subscription: %v", err)
			}
		},
	}); err != nil {
		b.Fatalf("subscribe to RTM_NEWADDR in %s: %v", nd.NS, err)
	}
	e := &newAddrEvents{seen: map[netip.Addr]time.Time{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for u := range ch {
			now := time.Now()
			ip, ok := netip.AddrFromSlice(u.LinkAddress.IP)
			if !ok || !u.NewAddr || u.Flags&unix.IFA_F_TENTATIVE != 0 {
				continue
			}
			e.mu.Lock()
			if _, dup := e.seen[ip.Unmap()]; !dup {
				e.seen[ip.Unmap()] = now
			}
			e.mu.Unlock()
		}
	}()
	b.Cleanup(func() {
		close(done)
		wg.Wait()
	})
	return e
}

func hostHandle(b *testing.B, nd *topo.Node) *netlink.Handle {
	b.Helper()
	ns, err := nd.Handle()
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		b.Fatalf("netlink handle in %s: %v", nd.NS, err)
	}
	b.Cleanup(h.Close)
	return h
}

// BenchmarkE2EIdle10k measures an agent holding 10,000 registered static
// addresses: the time to register them all at start-up (paced at --rate
// 2000 --burst 200, and at the defaults, 100/s burst 10), then its resident
// memory (in all and per address: RSS-B/addr, the whole VmRSS over the
// addresses, so that a regression in what each costs shows) and the CPU it
// uses over 30 s idle. With ADDRREG_BENCH_PPROF=DIR it also profiles the
// idle daemon (startProfiled).
//
// With ADDRREG_BENCH_QUICK=1 (make test runs every benchmark once so that none rots) it holds
// 1,100 addresses, more than the server's default per-DUID limit, for 2 s.
func BenchmarkE2EIdle10k(b *testing.B) {
	for _, pace := range []struct{ rate, burst string }{{"2000", "200"}, {"100", "10"}} {
		if topo.QuickBench() && pace.rate != "2000" {
			continue
		}
		b.Run("rate="+pace.rate, func(b *testing.B) { benchIdle(b, pace.rate, pace.burst) })
	}
}

func benchIdle(b *testing.B, rate, burst string) {
	n, idle := 10000, 30*time.Second
	if topo.QuickBench() {
		n, idle = 1100, 2*time.Second
	}
	l := newLab(b, labOpts{serverArg: unlimitedServer})
	l.globals(b, 1)

	// The server answers each address by unicast. The kernel's neighbour
	// table is shared by all namespaces and capped (gc_thresh3, 1024 by
	// default): give the server permanent entries, which the cap exempts.
	mac := strings.TrimSpace(l.host.MustExec(b, "cat", "/sys/class/net/eth0/address"))
	var hostBatch, serverBatch strings.Builder
	for i := range n {
		fmt.Fprintf(&hostBatch, "address add %s/64 dev eth0 nodad\n", benchAddr(i))
		fmt.Fprintf(&serverBatch, "neigh replace %s lladdr %s dev eth0 nud permanent\n", benchAddr(i), mac)
	}
	dir := b.TempDir()
	for name, content := range map[string]string{"host.batch": hostBatch.String(), "server.batch": serverBatch.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	l.server.MustExec(b, "ip", "-6", "-batch", filepath.Join(dir, "server.batch"))
	l.host.MustExec(b, "ip", "-6", "-batch", filepath.Join(dir, "host.batch"))

	start := time.Now()
	// Its own control socket: at the default path, another test's
	// 'addrregd status' would reach this daemon and be counted in its idle.
	args := []string{"--log-level", "info", "--rate", rate, "--burst", burst, "--control-socket", filepath.Join(dir, "control.sock")}
	prof := startProfiled(b)
	var p *topo.Proc
	if prof != nil {
		p = l.host.Start(b, "addrregd", append([]string{topo.BuildBinaryTags(b, "./cmd/addrregd", "addrreg_pprof"), "-i", "eth0",
			"--duid", testDUID, "--state-file", l.statePath(b)}, args...)...)
	} else {
		p = l.startAgent(b, args...)
	}
	p.WaitOutput(b, "registration supported on link", 15*time.Second)
	supported := time.Now()
	want := n + 1 // and the SLAAC address
	for deadline := time.Now().Add(4 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		got := strings.Count(p.Output(), "msg=registered ")
		if got >= want {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d addresses registered after 4 minutes; %d \"registration failed\"",
				got, want, strings.Count(p.Output(), `msg="registration failed"`))
		}
	}
	registered := time.Now()
	if f := strings.Count(p.Output(), `msg="registration failed"`); f != 0 {
		b.Logf("%d exchanges failed on the way (and were retried)", f)
	}

	pid := p.Pid()
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err != nil || !strings.HasPrefix(string(comm), "addrregd") {
		b.Fatalf("pid %d is %q (%v), not addrregd", pid, comm, err)
	}
	time.Sleep(2 * time.Second) // let the last replies and logs settle
	informsBefore := len(l.sniff.Informs(netip.Addr{}))
	cpu0 := proctest.CPU(b, pid)
	if prof != nil {
		prof.fetch(b, fmt.Sprintf("cpu-%s.pprof", rate), fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(idle.Seconds())))
	} else {
		time.Sleep(idle)
	}
	cpu1 := proctest.CPU(b, pid)
	if prof != nil {
		prof.fetch(b, fmt.Sprintf("heap-%s.pprof", rate), "/debug/pprof/heap?gc=1")
		prof.fetch(b, fmt.Sprintf("heap-%s.txt", rate), "/debug/pprof/heap?debug=1") // with runtime.MemStats
	}
	rss, hwm := procMem(b, pid)
	if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "RssAnon:") || strings.HasPrefix(line, "RssFile:") {
				b.Log(strings.Join(strings.Fields(line), " ")) // the heap and the rest; the binary's pages
			}
		}
	}
	informsIdle := len(l.sniff.Informs(netip.Addr{})) - informsBefore

	// Server side: stop it and read how many bindings it holds.
	l.refserver.Stop()
	bindings := -1
	for _, line := range strings.Split(l.refserver.Output(), "\n") {
		if i := strings.Index(line, "msg=stopped bindings="); i >= 0 {
			bindings, _ = strconv.Atoi(strings.Fields(line[i+len("msg=stopped bindings="):])[0])
		}
	}
	if bindings < want {
		b.Errorf("server holds %d bindings, want %d", bindings, want)
	}

	cpuPerMin := (cpu1 - cpu0).Seconds() / idle.Minutes()
	b.ReportMetric(float64(rss)/(1<<20), "RSS-MB")
	b.ReportMetric(float64(rss)/float64(want), "RSS-B/addr")
	b.ReportMetric(float64(hwm)/(1<<20), "peak-RSS-MB")
	b.ReportMetric(cpuPerMin, "idle-CPU-s/min")
	b.ReportMetric(registered.Sub(supported).Seconds(), "register-all-s")
	b.ReportMetric(float64(informsIdle), "idle-INFORMs")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d addresses registered %v after discovery (%v after start) at --rate %s; server holds %d bindings",
		want, registered.Sub(supported).Round(time.Millisecond), registered.Sub(start).Round(time.Millisecond), rate, bindings)
	b.Logf("idle %v: VmRSS %.1f MiB = %d bytes/address (VmHWM %.1f MiB), CPU %v = %.3f CPU-s/min, %d ADDR-REG-INFORMs",
		idle, float64(rss)/(1<<20), rss/int64(want), float64(hwm)/(1<<20), cpu1-cpu0, cpuPerMin, informsIdle)
}

// profiler fetches profiles from a daemon built with -tags addrreg_pprof
// (cmd/addrregd/pprof_on.go) over its unix socket.
type profiler struct {
	dir, sock string
	client    *http.Client
}

// startProfiled: with ADDRREG_BENCH_PPROF=DIR, the benchmark runs a
// profiling build of addrregd and writes a CPU profile of the idle window
// and a heap profile after it into DIR (go tool pprof DIR/cpu-2000.pprof).
// Profiling costs CPU: read the idle CPU figure from a run without it.
func startProfiled(b *testing.B) *profiler {
	dir := os.Getenv("ADDRREG_BENCH_PPROF")
	if dir == "" {
		return nil
	}
	sock := filepath.Join(b.TempDir(), "pprof.sock")
	b.Setenv("ADDRREG_PPROF", sock)
	return &profiler{dir: dir, sock: sock, client: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}
}

func (p *profiler) fetch(b *testing.B, name, path string) {
	b.Helper()
	resp, err := p.client.Get("http://addrregd" + path)
	if err != nil {
		b.Fatalf("profile %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("profile %s: %s %v", path, resp.Status, err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, name), body, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("wrote %s", filepath.Join(p.dir, name))
}

// procMem returns VmRSS and VmHWM of pid in bytes.
func procMem(b *testing.B, pid int) (rss, hwm int64) {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	return rss, hwm
}
