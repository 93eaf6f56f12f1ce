// Package demo holds `make demo` (demo.sh) and its test: whatever ends the
// demo, its namespaces and processes go with it.
package demo

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/topo"
)

// buildDemoBins builds what the demo runs into a temporary directory.
func buildDemoBins(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, c := range []string{"addrregd", "addrreg-refserver"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, c), "../../cmd/"+c)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", c, err, out)
		}
	}
	return dir
}

// demoRun is one demo.sh started in its own process group, as a terminal
// starts a pipeline, with its stdout on a pipe the test reads (the tee).
type demoRun struct {
	id   string
	cmd  *exec.Cmd
	out  *os.File // read end of stdout
	mu   sync.Mutex
	seen bytes.Buffer
	done chan error
}

func startDemo(t *testing.T, bin, id string) *demoRun {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "demo.sh", bin)
	cmd.Env = append(os.Environ(), "ADDRREG_DEMO_ID="+id)
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	d := &demoRun{id: id, cmd: cmd, out: r, done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			d.mu.Lock()
			d.seen.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
		}
	}()
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		for _, ns := range demoNamespaces(id) {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	return d
}

func (d *demoRun) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.seen.String()
}

// waitFor waits until the demo has printed s.
func (d *demoRun) waitFor(t *testing.T, s string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(d.output(), s) {
		select {
		case err := <-d.done:
			t.Fatalf("demo ended (%v) before printing %q:\n%s", err, s, d.output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo did not print %q within %v:\n%s", s, within, d.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wait waits for the demo to end and returns its exit status.
func (d *demoRun) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case err := <-d.done:
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		t.Fatalf("demo: %v", err)
	case <-time.After(within):
		t.Fatalf("demo still running %v after it was told to end:\n%s", within, d.output())
	}
	return -1
}

func demoNamespaces(id string) []string {
	var ns []string
	for _, n := range []string{"sw", "router", "server", "host"} {
		ns = append(ns, fmt.Sprintf("ar%s-%s", id, n))
	}
	return ns
}

// leftovers lists the demo's namespaces that still exist and whether any
// process of its group is alive.
func leftovers(t *testing.T, d *demoRun) []string {
	t.Helper()
	var left []string
	for _, ns := range demoNamespaces(d.id) {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			left = append(left, "namespace "+ns)
		}
	}
	// Processes of the demo's group, zombies aside (a dead process whose
	// parent died first waits for init to reap it: it runs nothing).
	out, _ := exec.Command("pgrep", "-g", fmt.Sprint(d.cmd.Process.Pid)).Output()
	for _, pid := range strings.Fields(string(out)) {
		stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
		left = append(left, fmt.Sprintf("process %s %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	}
	return left
}

// TestDemoTearsDown ends the demo the ways a user does and checks that it
// leaves no namespace and no process behind.
func TestDemoTearsDown(t *testing.T) {
	topo.RequireRoot(t)
	for _, tool := range []string{"radvd", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (make deps installs it): %v", tool, err)
		}
	}
	bin := buildDemoBins(t)
	tag := fmt.Sprintf("dt%05d", os.Getpid()%100000)

	cases := []struct {
		name string
		// after waits for this much of the story before ending it.
		after string
		end   func(t *testing.T, d *demoRun)
		rc    int
	}{
		{
			// make demo | tee demo.log, then Ctrl-C: the terminal sends
			// SIGINT to the whole pipeline; tee is gone first.
			name: "piped Ctrl-C", after: "the daemon's own view", rc: 130,
			end: func(t *testing.T, d *demoRun) {
				d.out.Close()
				_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGINT)
			},
		},
		{
			name: "SIGTERM", after: "starting addrregd", rc: 143,
			end: func(t *testing.T, d *demoRun) { _ = d.cmd.Process.Signal(syscall.SIGTERM) },
		},
		{
			// The terminal closed: SIGHUP to the group, stdout gone.
			name: "terminal closed", after: "starting addrreg-refserver", rc: 129,
			end: func(t *testing.T, d *demoRun) {
				d.out.Close()
				_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGHUP)
			},
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := startDemo(t, bin, fmt.Sprintf("%s%c", tag, 'a'+i))
			d.waitFor(t, tc.after, 60*time.Second)
			tc.end(t, d)
			if rc := d.wait(t, 20*time.Second); rc != tc.rc {
				t.Errorf("demo exit status %d, want %d", rc, tc.rc)
			}
			if left := leftovers(t, d); len(left) > 0 {
				t.Errorf("left behind: %v\noutput:\n%s", left, d.output())
			}
		})
	}

	t.Run("error midway", func(t *testing.T) {
		id := tag + "e"
		// The host's namespace exists already: `ip netns add` fails after
		// the switch, router and server were made.
		hostNS := "ar" + id + "-host"
		if out, err := exec.Command("ip", "netns", "add", hostNS).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", hostNS, err, out)
		}
		d := startDemo(t, bin, id)
		if rc := d.wait(t, 60*time.Second); rc == 0 {
			t.Errorf("demo succeeded with its host namespace taken")
		}
		var left []string
		for _, ns := range demoNamespaces(id) {
			if ns == hostNS {
				continue
			}
			if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
				left = append(left, ns)
			}
		}
		if len(left) > 0 {
			t.Errorf("namespaces left after an error: %v\n%s", left, d.output())
		}
	})
}
