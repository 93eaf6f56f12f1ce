package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
	"github.com/addrreg/addrreg/scheduler"
)

func TestStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.json")
	want := []savedAddr{
		{Iface: "eth0", HW: "02:00:00:00:00:01", Addr: netip.MustParseAddr("2001:db8::1"), Preferred: 300, Valid: 600, At: t0},
		{Iface: "eth0", Addr: netip.MustParseAddr("fd00::1")},
	}
	if err := writeState(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := readState(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".state.json.tmp*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestParseStateRejects(t *testing.T) {
	for _, b := range []string{
		"",
		"{",
		`{"version":1,"addresses":[]}` + "\n" + `{"version":1}`,
		`{"version":2,"addresses":[]}`,
		`{"version":1,"addresses":[{"iface":"","addr":"2001:db8::1"}]}`,
		`{"version":1,"addresses":[{"iface":"eth0/1","addr":"2001:db8::1"}]}`,
		`{"version":1,"addresses":[{"iface":"eth0","addr":"fe80::1"}]}`,
		`{"version":1,"addresses":[{"iface":"eth0","addr":"10.0.0.1"}]}`,
		`{"version":1,"addresses":[{"iface":"eth0","addr":"2001:db8::1%eth0"}]}`,
		`{"version":1,"addresses":[{"iface":"eth0","addr":"2001:db8::1","valid_lifetime":-1}]}`,
		`{"version":1,"addresses":[{"iface":"eth0","addr":"2001:db8::1","extra":1}]}`,
		"\x00\x01garbage",
	} {
		if _, err := parseState([]byte(b)); err == nil {
			t.Errorf("parseState(%q) accepted it", b)
		}
	}
	if got, err := parseState([]byte(`{"version":1,"addresses":[]}`)); err != nil || len(got) != 0 {
		t.Errorf("empty state: %v, %v", got, err)
	}
}

// FuzzParseState: any bytes give a clear error or a state that survives a
// write and a read unchanged; never a panic.
func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"version":1,"addresses":[{"iface":"eth0","hwaddr":"02:00:00:00:00:01","addr":"2001:db8::1","preferred_lifetime":300,"valid_lifetime":600,"at":"2026-11-23T12:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"addresses":[]}`))
	f.Add([]byte(`{"version":1,"addresses":[{"iface":"eth0","addr":"fd00::1"}`))
	f.Add([]byte("garbage"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		addrs, err := parseState(b)
		if err != nil {
			return
		}
		path := filepath.Join(dir, "state.json")
		if err := writeState(path, addrs); err != nil {
			t.Fatal(err)
		}
		again, err := readState(path)
		if err != nil {
			t.Fatalf("re-reading what was written: %v", err)
		}
		if len(again) != len(addrs) {
			t.Fatalf("%d addresses written, %d read", len(addrs), len(again))
		}
		for i := range addrs {
			if addrs[i].Addr != again[i].Addr || addrs[i].Iface != again[i].Iface || !addrs[i].At.Equal(again[i].At) {
				t.Fatalf("address %d: wrote %+v, read %+v", i, addrs[i], again[i])
			}
		}
	})
}

// A writer killed with SIGKILL at any moment leaves a file that parses:
// the old one or the new one. The writer is a child process (this test
// binary, re-run) writing states of growing size as fast as it can.
func TestStateSurvivesKill9(t *testing.T) {
	if testing.Short() && os.Getenv("ADDRREG_STATE_WRITER") == "" {
		t.Skip("kills 20 writer processes (2 s of wall clock): not a unit test; runs without -short")
	}
	if path := os.Getenv("ADDRREG_STATE_WRITER"); path != "" {
		for i := 1; ; i++ {
			var addrs []savedAddr
			for j := 0; j < i%500+1; j++ {
				addrs = append(addrs, savedAddr{Iface: "eth0", Addr: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(j >> 8), 15: byte(j)}), Valid: uint32(i)})
			}
			if err := writeState(path, addrs); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
	}
	path := filepath.Join(t.TempDir(), "state.json")
	if err := writeState(path, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStateSurvivesKill9$")
		cmd.Env = append(os.Environ(), "ADDRREG_STATE_WRITER="+path)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(20+i*7) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if _, err := readState(path); err != nil {
			t.Fatalf("after kill -9 number %d: %v", i+1, err)
		}
	}
	// The temporary files killed writers left are removed by the next load.
	loadState(path, time.Now(), slog.New(slog.DiscardHandler))
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".state.json.tmp*")); len(left) != 0 {
		t.Errorf("temporary files left after load: %v", left)
	}
}

// After a restart, the file's addresses no longer on the interface are
// deregistered once discovery shows support, those still there registered;
// nothing is deregistered on a link with another hardware address.
func TestStateDeregistersWhatWentAway(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	hw := "02:00:00:00:00:01"
	old := []savedAddr{
		{Iface: "eth0", HW: hw, Addr: netip.MustParseAddr("2001:db8::1"), Valid: 600},
		{Iface: "eth0", HW: hw, Addr: netip.MustParseAddr("2001:db8::2"), Valid: 600},
		{Iface: "eth0", HW: hw, Addr: netip.MustParseAddr("2001:db8::3"), Valid: 600},
		{Iface: "eth1", HW: "02:00:00:00:00:99", Addr: netip.MustParseAddr("2001:db8:9::1"), Valid: 600}, // not up: kept
		// Told 600 s an hour ago: the server has dropped it; forgotten.
		{Iface: "eth0", HW: hw, Addr: netip.MustParseAddr("2001:db8::4"), Valid: 600, At: t0.Add(-time.Hour)},
	}
	if err := writeState(path, old); err != nil {
		t.Fatal(err)
	}
	cfg := defaults()
	cfg.StatePath = path
	h := start(t, cfg, true)
	h.mon.send(netmon.Event{Kind: netmon.LinkAdded, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, Other: true, HardwareAddr: mustMAC(hw)}})
	h.mon.add(global("2001:db8::2", 600*time.Second))
	h.mon.add(ll)
	h.settle()
	_, sends := h.reg.snapshot()
	var dereg, reg []string
	for _, s := range sends {
		if s.deregistered {
			dereg = append(dereg, s.addr.String())
		} else {
			reg = append(reg, s.addr.String())
		}
	}
	if diff := cmp.Diff([]string{"2001:db8::1", "2001:db8::3"}, sorted(dereg)); diff != "" {
		t.Errorf("deregistered (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"2001:db8::2"}, reg); diff != "" {
		t.Errorf("registered (-want +got):\n%s", diff)
	}
	// The file now holds the registered address and eth1's, nothing else.
	h.advance(stateDebounce)
	h.settle()
	h.shutdown()
	got, err := readState(path)
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, a := range got {
		have = append(have, a.Iface+" "+a.Addr.String())
	}
	if diff := cmp.Diff([]string{"eth0 2001:db8::2", "eth1 2001:db8:9::1"}, have); diff != "" {
		t.Errorf("state file (-want +got):\n%s", diff)
	}

	// Another NIC under the same name: nothing deregistered.
	cfg.StatePath = filepath.Join(t.TempDir(), "state.json")
	if err := writeState(cfg.StatePath, old); err != nil {
		t.Fatal(err)
	}
	h = start(t, cfg, true)
	h.mon.send(netmon.Event{Kind: netmon.LinkAdded, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, Other: true, HardwareAddr: mustMAC("02:00:00:00:00:02")}})
	h.mon.add(ll)
	h.settle()
	if _, sends := h.reg.snapshot(); len(sends) != 0 {
		t.Errorf("sent %v on another link", sends)
	}
}

// A corrupt or unreadable state file is a warning, never fatal.
func TestCorruptStateFileIsIgnored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"addresses":[{"iface":"eth0","ad`), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	cfg := defaults()
	cfg.StatePath = path
	cfg.Logger = newTextLogger(&logs)
	h := startOnLink(t, cfg, true)
	h.mon.add(global("2001:db8::1", 600*time.Second))
	if p := phaseOf(h.settle(), "2001:db8::1"); p != Registered {
		t.Fatalf("phase %v, want registered", p)
	}
	h.shutdown()
	if !strings.Contains(logs.String(), "state file unreadable: ignoring it") {
		t.Errorf("no warning about the corrupt file in:\n%s", logs.String())
	}
}

// A registrar whose socket is gone is fatal: the machine records it (and
// Run ends with it: lifecycle_test.go).
func TestBrokenRegistrarIsFatal(t *testing.T) {
	h := start(t, defaults(), true)
	h.reg.probeErr = fmt.Errorf("probe eth0: %w", registrar.ErrSocketBroken)
	h.mon.link(true, false, true)
	h.mon.add(ll)
	if !errors.Is(h.m.fatal, registrar.ErrSocketBroken) {
		t.Fatalf("fatal = %v, want ErrSocketBroken", h.m.fatal)
	}
}

func mustMAC(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

func sorted(s []string) []string { slices.Sort(s); return s }

// newTextLogger logs to w (the handler serialises its writes; read w
// once the agent has stopped).
func newTextLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// encodeState writes what json.MarshalIndent would, one address at a time.
func TestEncodeStateIsMarshalIndent(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for _, addrs := range [][]savedAddr{
		nil,
		{{Iface: "eth0", HW: "02:00:00:00:00:01", Addr: netip.MustParseAddr("2001:db8::1"), Preferred: 300, Valid: 600, At: t0}},
		{{Iface: "eth0", Addr: netip.MustParseAddr("2001:db8::1")},
			{Iface: "e\"th1", HW: "x", Addr: netip.MustParseAddr("2001:db8::2"), Valid: scheduler.InfiniteSeconds, At: t0}},
		{{Iface: "<&é\\\x01>", HW: "02:00:00:00:00:01", Addr: netip.MustParseAddr("fd00::1"), Preferred: scheduler.InfiniteSeconds, Valid: 7, At: t0.Add(1500 * time.Millisecond)},
			{Iface: "wlan0", Addr: netip.MustParseAddr("2001:db8::3"), At: t0.In(time.FixedZone("x", 3600))}},
	} {
		want, err := json.MarshalIndent(savedState{Version: stateVersion, Addresses: append([]savedAddr{}, addrs...)}, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got, err := encodeState(append([]savedAddr{}, addrs...))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want)+"\n" {
			t.Errorf("encodeState:\n%s\nwant\n%s", got, want)
		}
	}
}
