package ctlsock

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// childEnv names the socket path a test binary started by
// systemd-socket-activate serves (TestMain).
const childEnv = "CTLSOCK_TEST_ACTIVATED"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(activatedChild(path))
	}
	os.Exit(m.Run())
}

// activatedChild takes the socket as a daemon would, answers one
// connection with whether it was passed, and closes it.
func activatedChild(path string) int {
	ln, err := Listen(path, "no-such-group-here") // a passed socket ignores the group
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := ln.Accept()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(c, "activated=%v\n", ln.Activated)
	c.Close()
	ln.Close()
	return 0
}

// TestSocketActivation: a socket systemd passes (here systemd-socket-activate,
// which passes it as systemd does) is taken as it is, and its file is left
// to systemd on Close.
func TestSocketActivation(t *testing.T) {
	if _, err := exec.LookPath("systemd-socket-activate"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-socket-activate not found: make deps installs it (systemd)")
		}
		t.Skip("systemd-socket-activate not found (package systemd)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "control.sock")
	cmd := exec.Command("systemd-socket-activate", "-l", path, "-E", childEnv+"="+path, exe)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var c net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err = net.Dial("unix", path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v\n%s", path, err, stderr.String())
		}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "activated=true\n" {
		t.Fatalf("read %q, %v; want activated=true (stderr %s)", b, err, stderr.String())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("Close removed the socket systemd made: %v", err)
	}
}
