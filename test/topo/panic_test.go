package topo_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/addrreg/addrreg/test/topo"
)

// TestTeardownOnPanic runs a test that builds a network and then panics, in
// a child process (a panic ends the test binary), and checks that none of
// its namespaces outlive it.
func TestTeardownOnPanic(t *testing.T) {
	if os.Getenv("TOPO_PANIC_CHILD") == "1" {
		n := topo.New(t)
		n.Node("a")
		n.Node("b")
		os.Stdout.WriteString("ID=" + n.ID() + "\n")
		panic("deliberate panic with a network up")
	}
	topo.RequireRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run", "^TestTeardownOnPanic$", "-test.v")
	cmd.Env = append(os.Environ(), "TOPO_PANIC_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "deliberate panic") {
		t.Fatalf("child did not panic as planned (err %v):\n%s", err, out)
	}
	_, rest, ok := strings.Cut(string(out), "ID=")
	if !ok {
		t.Fatalf("child printed no network id:\n%s", out)
	}
	id, _, _ := strings.Cut(rest, "\n")
	list, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(list), id) {
		t.Fatalf("namespaces of the panicked test %s survive it:\n%s", id, list)
	}
}
