package topo

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// NeighStats is the kernel's IPv6 neighbour table (ndisc_cache) as
// /proc/net/stat/ndisc_cache shows it: one table for every namespace.
type NeighStats struct {
	Entries    int // entries now (machine-wide)
	TableFulls int // allocations refused for a full table ("neighbor table overflow!")
	ForcedGC   int // forced garbage collections
}

// ReadNeighStats reads /proc/net/stat/ndisc_cache: a header, then one row
// per CPU in hex; entries is the table's (the same on every row), the
// counters are per CPU and summed.
func ReadNeighStats(t testing.TB) NeighStats {
	t.Helper()
	b, err := os.ReadFile("/proc/net/stat/ndisc_cache")
	if err != nil {
		t.Fatalf("neighbour table statistics: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	head := strings.Fields(lines[0])
	var s NeighStats
	for _, l := range lines[1:] {
		for i, f := range strings.Fields(l) {
			if i >= len(head) {
				break
			}
			v, err := strconv.ParseUint(f, 16, 64)
			if err != nil {
				t.Fatalf("/proc/net/stat/ndisc_cache: %q: %v", f, err)
			}
			switch head[i] {
			case "entries":
				s.Entries = int(v)
			case "table_fulls":
				s.TableFulls += int(v)
			case "forced_gc_runs":
				s.ForcedGC += int(v)
			}
		}
	}
	return s
}

// Neighbours counts the node's IPv6 neighbour entries on ifname, in every
// state (`ip -6 neigh show nud all`): its share of the machine's table.
func (nd *Node) Neighbours(t testing.TB, ifname string) int {
	t.Helper()
	out := nd.MustExec(t, "ip", "-6", "neigh", "show", "nud", "all", "dev", ifname)
	return strings.Count(out, "\n")
}
