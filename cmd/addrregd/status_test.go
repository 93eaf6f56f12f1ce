package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/addrreg/addrreg/agent"
)

func TestStatusNoDaemonExits3(t *testing.T) {
	var out, errb bytes.Buffer
	sock := filepath.Join(t.TempDir(), "control.sock")
	if code := run([]string{"status", "--control-socket", sock}, &out, &errb); code != exitNotRunning {
		t.Errorf("no socket: exit %d, want 3 (%s)", code, errb.String())
	}
	// A stale socket file: nothing listens, connect is refused.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	errb.Reset()
	if code := run([]string{"status", "--control-socket", sock}, &out, &errb); code != exitNotRunning || !strings.Contains(errb.String(), "not running") {
		t.Errorf("stale socket: exit %d, want 3 (%s)", code, errb.String())
	}
}

// serveDoc answers every connection on a new socket with doc.
func serveDoc(t *testing.T, doc statusDoc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = json.NewEncoder(c).Encode(doc)
			c.Close()
		}
	}()
	return sock
}

func TestStatusOutput(t *testing.T) {
	now := time.Date(2026, 12, 1, 14, 3, 0, 0, time.UTC)
	doc := statusDoc{Schema: statusSchema, Daemon: daemonInfo{Version: "v1", PID: 42, DUID: "0004aa", Started: now.Add(-time.Hour), Now: now, Enable: true}}
	doc.Interfaces = []agent.IfaceStatus{
		{Name: "eth0", Index: 2, State: agent.IfSupported, SeenMO: true,
			Server: &agent.ServerStatus{Address: netip.MustParseAddr("fe80::1"), DUID: []byte{0, 1, 2}, Answered: now.Add(-time.Minute)},
			Addresses: []agent.AddrStatus{
				{Addr: netip.MustParseAddr("2001:db8::1"), Kind: agent.KindStable, Phase: agent.Registered, LastRegistered: now.Add(-10 * time.Second),
					Told: &agent.Lifetimes{Preferred: 300, Valid: 600}},
				{Addr: netip.MustParseAddr("2001:db8::5"), Kind: agent.KindStatic, Phase: agent.Failed, LastError: "no reply",
					NextRefresh: now.Add(time.Hour), RefreshReason: agent.ReasonRetryBackoff},
			}},
		{Name: "wlan0", Index: 3, State: agent.IfUnsupported, NextProbe: now.Add(24 * time.Hour)},
	}
	sock := serveDoc(t, doc)
	var out, errb bytes.Buffer
	if code := run([]string{"status", "--control-socket", sock}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"pid 42", "● 2: eth0", "State: supported", "fe80::1 (DUID 000102)", "2001:db8::1", "stable",
		"registered", "5m0s/10m0s", "retry_backoff", "no reply", "● 3: wlan0", "unsupported", "Next probe:", "(1m0s ago)", "in 1h0m0s",
		"temporary addresses are not registered"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"status", "--control-socket", sock, "--json", "-i", "wlan0"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	ifs := got["interfaces"].([]any)
	if len(ifs) != 1 || ifs[0].(map[string]any)["name"] != "wlan0" || ifs[0].(map[string]any)["state"] != "unsupported" {
		t.Errorf("-i wlan0 --json: %s", out.String())
	}
	if code := run([]string{"status", "--control-socket", sock, "-i", "eth9"}, &out, &errb); code != 1 {
		t.Errorf("-i eth9: exit %d, want 1", code)
	}
}
