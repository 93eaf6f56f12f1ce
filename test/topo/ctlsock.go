package topo

import (
	"os"
	"path/filepath"
	"testing"
)

// ControlSocket returns a control-socket path of the test's own, short
// enough for sun_path (108 bytes) whatever the test's name, removed when
// the test ends. Daemons a test starts without --control-socket would all
// use the default under /run, which every namespace shares: one test's
// `addrregd status` could then reach another test's daemon, and a second
// daemon finds the path taken.
func ControlSocket(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatalf("control socket directory: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "control.sock")
}
