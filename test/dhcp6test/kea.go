package dhcp6test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/topo"
)

// KeaDebian is where Debian's kea-dhcp6-server package (Kea 2.2 in Debian
// 12) puts the server.
const KeaDebian = "/usr/sbin/kea-dhcp6"

// StartKea runs Debian's kea-dhcp6 in nd's namespace with dhcp6 as the
// "Dhcp6" object of its configuration, written into dir, where its pid and
// lock files go too; the caller points data-directory and lease files
// there. It waits until nd's eth0 has a usable link-local address (Kea binds
// to it) and Kea has started serving, and logs Kea's version. Kea stops in
// t.Cleanup.
func StartKea(t testing.TB, nd *topo.Node, dir string, dhcp6 map[string]any) *topo.Proc {
	t.Helper()
	if _, err := os.Stat(KeaDebian); err != nil {
		t.Fatalf("kea-dhcp6 not installed (make deps: kea-dhcp6-server): %v", err)
	}
	b, err := json.MarshalIndent(map[string]any{"Dhcp6": dhcp6}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "kea-dhcp6.conf")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	nd.WaitAddrs(t, "eth0", topo.LinkLocal, 15*time.Second)
	p := nd.Start(t, "kea-dhcp6", "env", "KEA_PIDFILE_DIR="+dir, "KEA_LOCKFILE_DIR="+dir, KeaDebian, "-c", path)
	p.WaitOutput(t, "DHCP6_STARTED", 30*time.Second)
	t.Logf("kea-dhcp6 %s started in %s", strings.TrimSpace(nd.MustExec(t, KeaDebian, "-v")), nd.Name)
	return p
}
