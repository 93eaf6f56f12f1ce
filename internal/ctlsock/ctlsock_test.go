package ctlsock

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenModesAndStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "control.sock")
	ln, err := Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want socket 0600", fi.Mode())
	}
	if _, err := Listen(path, ""); err == nil || !strings.Contains(err.Error(), "answers there") {
		t.Errorf("second Listen on a live socket: %v, want an error", err)
	}
	ln.Listener.Close() // as after kill -9: a stale socket file stays behind
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket gone: %v", err)
	}
	ln2, err := Listen(path, "")
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer ln2.Close()
	go func() {
		if c, err := ln2.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// The first listener's Close must not remove the second one's socket.
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("another daemon's socket removed: %v", err)
	}
	ln2.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left behind after Close: %v", err)
	}
	if _, err := Listen(filepath.Join(t.TempDir(), "x.sock"), "no-such-group-here"); err == nil {
		t.Error("unknown group accepted")
	}
	if os.Getuid() == 0 {
		gpath := filepath.Join(t.TempDir(), "g.sock")
		lg, err := Listen(gpath, "root")
		if err != nil {
			t.Fatal(err)
		}
		defer lg.Close()
		if fi, _ := os.Stat(gpath); fi.Mode().Perm() != 0o660 {
			t.Errorf("group socket mode %v, want 0660", fi.Mode().Perm())
		}
	}
}
