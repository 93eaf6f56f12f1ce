package agent_test

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/topo"
)

// addrregd under systemd (Type=notify, WatchdogSec=): the notify socket
// hears READY=1 once it is running, STATUS= lines that count the
// registrations the server made, WATCHDOG=1 pings at a third of
// WATCHDOG_USEC, and STOPPING=1 on SIGTERM.
func TestE2ESystemdNotify(t *testing.T) {
	l := newLab(t, labOpts{})
	ip := addrOf(l.globals(t, 1)[0])
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 256)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	// A path socket reaches across network namespaces; 3 s watchdog: a
	// ping every second.
	p := l.host.Start(t, "addrregd", "env", "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=3000000",
		topo.BuildBinary(t, "./cmd/addrregd"), "-i", "eth0", "--duid", testDUID, "--state-file", l.statePath(t))
	var ready, stopping bool
	var pings int
	var status string
	wait := func(what string, done func() bool, timeout time.Duration) {
		t.Helper()
		deadline := time.After(timeout)
		for !done() {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("notify socket closed waiting for %s", what)
				}
				for _, line := range strings.Split(m, "\n") {
					switch {
					case line == "READY=1":
						ready = true
					case line == "STOPPING=1":
						stopping = true
					case line == "WATCHDOG=1":
						pings++
					case strings.HasPrefix(line, "STATUS="):
						status = strings.TrimPrefix(line, "STATUS=")
					}
				}
			case <-deadline:
				t.Fatalf("no %s within %v (ready %v, pings %d, status %q); log:\n%s", what, timeout, ready, pings, status, p.Output())
			}
		}
	}
	wait("READY=1", func() bool { return ready }, 15*time.Second)
	l.sniff.WaitInforms(t, ip, 1, 15*time.Second)
	wait("STATUS= with the registration", func() bool {
		return strings.HasPrefix(status, "1/1 interfaces support registration, 1/") && !strings.Contains(status, " 0/")
	}, 20*time.Second)
	before := pings
	wait("3 more watchdog pings", func() bool { return pings >= before+3 }, 20*time.Second)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wait("STOPPING=1", func() bool { return stopping }, 10*time.Second)
	if err := p.Wait(t, 10*time.Second); err != nil {
		t.Errorf("addrregd exited with %v after SIGTERM", err)
	}
}
