package refserver_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/pgtest"
	"github.com/addrreg/addrreg/test/proctest"
	"github.com/addrreg/addrreg/test/topo"
)

// BenchmarkServerRelay measures registration throughput and latency the way
// issue 13's table does: addrreg-loadgen in relay mode (one relay socket, a
// distinct client and address per message) offers fixed rates to
// addrreg-refserver, durable as always (committed before each
// reply), and reports the answered share and p50/p99 per rate. With
// ADDRREG_KEA=/path/to/kea-dhcp6 (Kea 3.x: memfile, or with
// ADDRREG_BENCH_DB=postgres its PostgreSQL lease backend on the same test
// cluster) it measures Kea the same way in the same run. `make bench-server` runs it; knobs:
//
//	ADDRREG_BENCH_RATES     offered rates, comma-separated (default 20000,25000,30000,48000)
//	ADDRREG_BENCH_DURATION  per rate (default 10s)
//	ADDRREG_BENCH_WARMUP    unmeasured load at the first rate before the rates (default 1s)
//	ADDRREG_KEA             a kea-dhcp6 binary (optional; see keaLFC, keaLeaseDB)
//	ADDRREG_BENCH_DB        postgres: both servers on the test PostgreSQL (default SQLite / memfile)
//	ADDRREG_BENCH_KEYS      sequential (default: clients' interface IDs and DUIDs count up) or random (in no order, as real clients')
//	ADDRREG_BENCH_SERVER_ENV  VAR=value ... for addrreg-refserver only (e.g. GOGC=200)
//	ADDRREG_BENCH_SERVER_ARGS more addrreg-refserver flags (e.g. --readers 1)
//
// With ADDRREG_BENCH_QUICK=1 (make test) it offers 2000/s for 1 s: the benchmark must work, the
// figure does not matter there.
func BenchmarkServerRelay(b *testing.B) {
	topo.RequireRoot(b)
	rates := []int{20000, 25000, 30000, 48000}
	dur := 10 * time.Second
	if topo.QuickBench() {
		rates, dur = []int{2000}, time.Second
	}
	if v := os.Getenv("ADDRREG_BENCH_RATES"); v != "" {
		rates = nil
		for _, f := range strings.Split(v, ",") {
			r, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || r <= 0 {
				b.Fatalf("ADDRREG_BENCH_RATES=%q: %q is not a rate", v, f)
			}
			rates = append(rates, r)
		}
	}
	if v := os.Getenv("ADDRREG_BENCH_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("ADDRREG_BENCH_DURATION=%q: want a duration", v)
		}
		dur = d
	}
	warm := time.Second
	if topo.QuickBench() {
		warm = 0
	}
	if v := os.Getenv("ADDRREG_BENCH_WARMUP"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			b.Fatalf("ADDRREG_BENCH_WARMUP=%q: want a duration", v)
		}
		warm = d
	}
	keys := "sequential"
	if v := os.Getenv("ADDRREG_BENCH_KEYS"); v != "" {
		if v != "sequential" && v != "random" {
			b.Fatalf("ADDRREG_BENCH_KEYS=%q: want sequential or random", v)
		}
		keys = v
	}
	servers := []string{"refserver"}
	if os.Getenv("ADDRREG_KEA") != "" {
		servers = append(servers, "kea")
	}
	lg := topo.BuildBinary(b, "./cmd/addrreg-loadgen")
	var table []string
	for _, server := range servers {
		b.Run(server, func(b *testing.B) {
			n := topo.New(b)
			srv, relay := n.Node("server"), n.Node("relay")
			srv.MustExec(b, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad")
			relay.MustExec(b, "ip", "-6", "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad")
			p := startBenchServer(b, server, srv)
			// Warm-up, not measured: a process just started faults in its
			// memory, starts its threads and collects a small heap often,
			// which is not the steady state the rates are about.
			if warm > 0 {
				relay.MustExec(b, lg, "-i", "eth0", "--relay", "2001:db8:2::1", "--prefix", "2001:db8:2::/64",
					"--server", "2001:db8:1::1", "--rate", strconv.Itoa(rates[0]), "--duration", warm.String(),
					"--count", "0", "--offset", "0", "--timeout", "1s", "--keys", keys, "--json")
			}
			for i, rate := range rates {
				b.Run("rate="+strconv.Itoa(rate), func(b *testing.B) {
					var before string
					cpu0 := proctest.CPU(b, p.Pid())
					if server == "refserver" {
						before = srv.Scrape(b, benchMetrics)
					}
					out := relay.MustExec(b, lg, "-i", "eth0", "--relay", "2001:db8:2::1", "--prefix", "2001:db8:2::/64",
						"--server", "2001:db8:1::1", "--rate", strconv.Itoa(rate), "--duration", dur.String(),
						"--count", "0", "--offset", strconv.Itoa(0x1000000*(i+1)), "--timeout", "1s", "--keys", keys, "--json")
					var rep struct {
						Sent, Replied int
						Answered      float64 `json:"answered_pct"`
						P50           float64 `json:"p50_ms"`
						P99           float64 `json:"p99_ms"`
					}
					line := out[strings.LastIndexByte(strings.TrimSpace(out), '\n')+1:]
					if err := json.Unmarshal([]byte(line), &rep); err != nil {
						b.Fatalf("loadgen output: %v\n%s", err, out)
					}
					if rep.Sent == 0 || rep.Replied == 0 {
						b.Fatalf("%s answered nothing: %s\n%s", server, out, p.Output())
					}
					b.ReportMetric(rep.Answered, "answered-%")
					b.ReportMetric(rep.Answered/100*float64(rate), "answered/s")
					b.ReportMetric(rep.P50, "p50-ms")
					b.ReportMetric(rep.P99, "p99-ms")
					b.ReportMetric(0, "ns/op")
					cpu := proctest.CPU(b, p.Pid()) - cpu0
					perMsg := float64(cpu.Microseconds()) / float64(max(rep.Replied, 1))
					b.ReportMetric(perMsg, "server-CPU-µs/reply")
					stages := ""
					if server == "refserver" {
						stages = stageQuantiles(before, srv.Scrape(b, benchMetrics))
					}
					table = append(table, fmt.Sprintf("| %s | %d | %.1f %% | %.2f ms / %.2f ms | %.1f | %s |", server, rate, rep.Answered, rep.P50, rep.P99, perMsg, stages))
				})
			}
			if server == "refserver" {
				b.Logf("server counters at the end:\n%s", lastLines(p.Output(), 3))
			}
		})
	}
	b.Logf("offered for %v each after %v of warm-up, relayed, one client per message ("+keys+" keys); the server's stages are p50 / p99 bucket bounds "+
		"(socket: kernel receive to read; queue: to its commit; commit; send: to sent; total):\n"+
		"| server | offered/s | answered | p50 / p99 | server CPU µs/reply | server stages p50 / p99 |\n|---|---|---|---|---|---|\n%s",
		dur, warm, strings.Join(table, "\n"))
}

// benchMetrics is where the benchmark's refserver serves its metrics, in
// the server's namespace.
const benchMetrics = "[::1]:9547"

// stageQuantiles returns the p50 and p99 of each of the refserver's reply
// stages (addrreg_refserver_reply_stage_seconds) between two scrapes, as
// the upper bounds of the histogram buckets they fall in, in ms.
func stageQuantiles(before, after string) string {
	const name = "addrreg_refserver_reply_stage_seconds_bucket{stage=\""
	type bucket struct {
		le float64
		n  float64
	}
	parse := func(text string) map[string][]bucket {
		m := map[string][]bucket{}
		for l := range strings.SplitSeq(text, "\n") {
			rest, ok := strings.CutPrefix(l, name)
			if !ok {
				continue
			}
			stage, rest, _ := strings.Cut(rest, "\",le=\"")
			le, rest, _ := strings.Cut(rest, "\"} ")
			lf, err1 := strconv.ParseFloat(le, 64)
			n, err2 := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err1 == nil && err2 == nil {
				m[stage] = append(m[stage], bucket{lf, n})
			}
		}
		return m
	}
	b, a := parse(before), parse(after)
	var out []string
	for _, stage := range []string{"socket", "queue", "commit", "send", "total"} {
		bs := a[stage]
		if len(bs) == 0 {
			continue
		}
		for i := range bs {
			if i < len(b[stage]) {
				bs[i].n -= b[stage][i].n
			}
		}
		total := bs[len(bs)-1].n // le="+Inf"
		q := func(p float64) string {
			for _, x := range bs {
				if x.n >= p*total {
					if x.le > 1e9 {
						return "∞"
					}
					return strconv.FormatFloat(x.le*1000, 'g', 3, 64)
				}
			}
			return "?"
		}
		out = append(out, fmt.Sprintf("%s %s/%s", stage, q(0.5), q(0.99)))
	}
	return strings.Join(out, ", ")
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}

// startBenchServer starts the server under test in srv, serving the relayed
// link 2001:db8:2::/64 (relay link-address 2001:db8:2::1) without rate
// limits, as a production server facing relays would be configured.
func startBenchServer(b *testing.B, server string, srv *topo.Node) *topo.Proc {
	dir := b.TempDir()
	// Kea binds the link-local address too: it must have passed DAD.
	srv.WaitAddrs(b, "eth0", topo.LinkLocal, 15*time.Second)
	if server == "kea" {
		kea := os.Getenv("ADDRREG_KEA")
		conf := filepath.Join(dir, "kea.json")
		leaseDB, keaEnv := keaLeaseDB(b, kea)
		if err := os.WriteFile(conf, []byte(keaBenchConfig(leaseDB)), 0o644); err != nil {
			b.Fatal(err)
		}
		// Kea 3.x keeps its lease file, PID and lock files in these.
		env := append([]string{"env", "KEA_DHCP_DATA_DIR=" + dir, "KEA_PIDFILE_DIR=" + dir, "KEA_LOCKFILE_DIR=" + dir}, keaEnv...)
		return waitPort547(b, srv, srv.Start(b, "kea", append(env, kea, "-c", conf)...))
	}
	bin := topo.BuildBinary(b, "./cmd/addrreg-refserver")
	// ADDRREG_BENCH_SERVER_ENV (e.g. "GOGC=200 GOMAXPROCS=1") sets the
	// server's runtime knobs only, not the load generator's.
	cmd := append([]string{"env"}, strings.Fields(os.Getenv("ADDRREG_BENCH_SERVER_ENV"))...)
	cmd = append(cmd, bin, "-i", "eth0", "--prefix", "2001:db8:2::1=2001:db8:2::/64",
		"--db", benchServerDB(b, dir), "--metrics-listen", benchMetrics, "--rate", "0", "--rate-duid", "0",
		"--no-registration-log", "--log-level", "warn")
	cmd = append(cmd, strings.Fields(os.Getenv("ADDRREG_BENCH_SERVER_ARGS"))...)
	return waitPort547(b, srv, srv.Start(b, "refserver", cmd...))
}

// benchServerDB is the server's database: SQLite in dir, or with
// ADDRREG_BENCH_DB=postgres a database of the test PostgreSQL (test/pgtest).
func benchServerDB(b *testing.B, dir string) string {
	if os.Getenv("ADDRREG_BENCH_DB") == "postgres" {
		return pgtest.Shared(b).NewDB(b)
	}
	return filepath.Join(dir, "bench.db")
}

// waitPort547 returns p once a socket listens on UDP port 547 in srv (the
// servers log nothing at warning level when they start).
func waitPort547(b *testing.B, srv *topo.Node, p *topo.Proc) *topo.Proc {
	deadline := time.Now().Add(15 * time.Second)
	for {
		if out, _ := srv.Exec("ss", "-Hlun", "sport", "= :547"); strings.Contains(out, ":547") {
			return p
		}
		if time.Now().After(deadline) {
			b.Fatalf("server not listening after 15 s:\n%s", p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// keaLFC is the environment that tells Kea's memfile backend where its
// lease file cleaner is: Kea 3.x will not start without kea-lfc at the
// path it was configured with (/usr/local/sbin/kea-lfc) or in
// KEA_LFC_EXECUTABLE, even with "lfc-interval": 0. Looked for:
// KEA_LFC_EXECUTABLE as given, kea-lfc next to kea-dhcp6 (installed), or
// src/bin/lfc/kea-lfc of the build tree kea-dhcp6 is in (meson does not
// build it with kea-dhcp6: `ninja -C BUILD src/bin/lfc/kea-lfc`).
func keaLFC(b *testing.B, kea string) []string {
	if os.Getenv("KEA_LFC_EXECUTABLE") != "" {
		return nil // passed on as it is
	}
	for _, lfc := range []string{filepath.Join(filepath.Dir(kea), "kea-lfc"), filepath.Join(filepath.Dir(kea), "..", "lfc", "kea-lfc")} {
		if _, err := os.Stat(lfc); err == nil {
			return []string{"KEA_LFC_EXECUTABLE=" + lfc}
		}
	}
	b.Logf("no kea-lfc next to %s or in its build tree's src/bin/lfc: Kea uses the one it was configured with; "+
		"if it says \"Could not open lease file: File not found: …kea-lfc\", build it (ninja -C BUILD src/bin/lfc/kea-lfc) "+
		"or set KEA_LFC_EXECUTABLE", kea)
	return nil
}

// keaLeaseDB is Kea's "lease-database" and the environment it needs: its
// memfile, or with ADDRREG_BENCH_DB=postgres its PostgreSQL backend (the
// hook library libdhcp_pgsql.so in Kea 3.x) on a new database of the same
// test cluster as the refserver's, made with Kea's own schema
// (dhcpdb_create.pgsql: ADDRREG_KEA_PGSQL_SCHEMA, else found from
// kea-dhcp6's place in a build tree or an installation). In a build tree
// the hook is BUILD/src/hooks/dhcp/pgsql/libdhcp_pgsql.so (`ninja -C BUILD
// src/hooks/dhcp/pgsql/libdhcp_pgsql.so`), loaded through KEA_HOOKS_PATH;
// an installed Kea finds it in its own hooks directory.
func keaLeaseDB(b *testing.B, kea string) (string, []string) {
	if os.Getenv("ADDRREG_BENCH_DB") != "postgres" {
		// Kea's memfile: kea-leases6.csv in KEA_DHCP_DATA_DIR, written
		// without fsync.
		return `{"type": "memfile", "lfc-interval": 0}`, keaLFC(b, kea)
	}
	var env []string
	if os.Getenv("KEA_HOOKS_PATH") == "" {
		hooks := filepath.Join(filepath.Dir(kea), "..", "..", "hooks", "dhcp", "pgsql")
		if _, err := os.Stat(filepath.Join(hooks, "libdhcp_pgsql.so")); err == nil {
			env = append(env, "KEA_HOOKS_PATH="+filepath.Clean(hooks))
		}
	}
	schema := os.Getenv("ADDRREG_KEA_PGSQL_SCHEMA")
	if schema == "" {
		for _, f := range []string{
			filepath.Join(filepath.Dir(kea), "..", "..", "share", "database", "scripts", "pgsql", "dhcpdb_create.pgsql"), // build tree: BUILD/src/bin/dhcp6
			filepath.Join(filepath.Dir(kea), "..", "share", "kea", "scripts", "pgsql", "dhcpdb_create.pgsql"),            // PREFIX/sbin
		} {
			if _, err := os.Stat(f); err == nil {
				schema = f
				break
			}
		}
	}
	if schema == "" {
		b.Fatalf("Kea's PostgreSQL schema (dhcpdb_create.pgsql) not found from %s: set ADDRREG_KEA_PGSQL_SCHEMA", kea)
	}
	sqlText, err := os.ReadFile(schema)
	if err != nil {
		b.Fatal(err)
	}
	dbURL := pgtest.Shared(b).NewDB(b)
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	// Without arguments pgx sends the script as one simple query: its
	// statements (functions with $$ bodies among them) in one go.
	if _, err := db.Exec(string(sqlText)); err != nil {
		b.Fatalf("Kea's schema %s: %v", schema, err)
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		b.Fatal(err)
	}
	// The unix socket (the directory in host=): reachable from the
	// server's namespace, as the refserver's connection is.
	cfg := map[string]any{"type": "postgresql", "name": strings.TrimPrefix(u.Path, "/"), "user": u.User.Username(),
		"host": u.Query().Get("host")}
	if p, err := strconv.Atoi(u.Query().Get("port")); err == nil {
		cfg["port"] = p
	}
	j, err := json.Marshal(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return string(j), env
}

// keaBenchConfig is a Kea 3.x DHCPv6 configuration equivalent to the
// refserver's: registrations accepted (allow-address-registration, Kea
// 3.1.4 and later) on the relayed link 2001:db8:2::/64 (Kea picks the subnet
// holding the relay's link-address), the relay's unicast to 2001:db8:1::1
// received (the "eth0/ADDRESS" form), leases in leaseDB (keaLeaseDB),
// warnings only in the log.
func keaBenchConfig(leaseDB string) string {
	hooks := ""
	if strings.Contains(leaseDB, `"postgresql"`) {
		hooks = `"hooks-libraries": [{"library": "libdhcp_pgsql.so"}],`
	}
	return `{"Dhcp6": {
  "interfaces-config": {"interfaces": ["eth0/2001:db8:1::1"]},
  "allow-address-registration": true,
  "lease-database": ` + leaseDB + `, ` + hooks + `
  "subnet6": [{"id": 2, "subnet": "2001:db8:2::/64"}],
  "loggers": [{"name": "kea-dhcp6", "severity": "WARN", "output-options": [{"output": "stdout"}]}]
}}`
}
