package topo

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is a background process running in a node's namespace. Its standard
// output and error are captured together; the test log shows them when the
// test fails.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
	once sync.Once
}

// Start runs argv in the node's namespace in the background. The process is
// killed (SIGTERM, then SIGKILL after 3 s) when the test ends.
func (nd *Node) Start(t testing.TB, name string, argv ...string) *Proc {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", nd.NS}, argv...)...)
	p := &Proc{Name: nd.Name + "/" + name, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	// Its own process group, so Stop reaches children (ip netns exec → argv).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.Name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	nd.mu.Lock()
	nd.procs = append(nd.procs, p)
	nd.mu.Unlock()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", p.Name, p.Output())
		}
	})
	return p
}

// Output returns everything the process has written so far.
func (p *Proc) Output() string { return p.out.String() }

// Signal sends sig to the process (the command itself, not ip netns exec,
// which execs it).
func (p *Proc) Signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s: %w", p.Name, err)
	}
	return nil
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Wait waits up to timeout for the process to exit and returns its exit error
// (nil for status 0). It fails the test on timeout.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v", p.Name, timeout)
		return nil
	}
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Stop ends the process: SIGTERM to its group, SIGKILL after 3 s.
func (p *Proc) Stop() {
	p.once.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(3 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
}

// WaitOutput polls the process output until it contains substr.
func (p *Proc) WaitOutput(t testing.TB, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.Output(), substr) {
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before printing %q; output:\n%s", p.Name, p.err, substr, p.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not print %q within %v; output:\n%s", p.Name, substr, timeout, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	buildMu    sync.Mutex
	buildCache = map[string]string{}
	buildDir   string
)

// BuildBinary builds the main package pkg (a path relative to the module
// root, e.g. "./cmd/addrregd") once per test binary and returns the path of
// the executable.
func BuildBinary(t testing.TB, pkg string) string {
	t.Helper()
	return BuildBinaryTags(t, pkg, "")
}

// BuildBinaryTags is BuildBinary with build tags (comma-separated), for
// test-only builds such as addrregd's fault injection.
func BuildBinaryTags(t testing.TB, pkg, tags string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	cacheKey := pkg + "\x00" + tags
	if p, ok := buildCache[cacheKey]; ok {
		return p
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "addrreg-bin-")
		if err != nil {
			t.Fatalf("temp dir: %v", err)
		}
		buildDir = d
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(buildDir, filepath.Base(pkg))
	args := []string{"build", "-o", out}
	if tags != "" {
		out += "-" + strings.ReplaceAll(tags, ",", "-")
		args = []string{"build", "-tags", tags, "-o", out}
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	buildCache[cacheKey] = out
	return out
}

func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("module root: no caller information")
	}
	// this file is <root>/test/topo/proc.go
	return filepath.Dir(filepath.Dir(filepath.Dir(file))), nil
}
