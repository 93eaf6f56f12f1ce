package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/addrreg/addrreg/agent"
	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
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

// fakeMon feeds the agent a fixed list of events, then blocks.
type fakeMon struct{ evs chan netmon.Event }

func (m *fakeMon) Next(ctx context.Context) (netmon.Event, error) {
	select {
	case ev := <-m.evs:
		return ev, nil
	case <-ctx.Done():
		return netmon.Event{}, ctx.Err()
	}
}

func (m *fakeMon) Lookup(int, netip.Addr) (netmon.Addr, bool, error) {
	return netmon.Addr{}, false, nil
}

type idleReg struct{}

func (idleReg) Probe(ctx context.Context, _ int, _ netip.Addr) (bool, error) {
	<-ctx.Done()
	return false, ctx.Err()
}

func (idleReg) Register(ctx context.Context, _ registrar.Target) (registrar.Result, error) {
	<-ctx.Done()
	return registrar.Result{}, ctx.Err()
}

// SIGUSR1's status lines carry names, in JSON too.
func TestLogStatusNames(t *testing.T) {
	mon := &fakeMon{evs: make(chan netmon.Event, 2)}
	mon.evs <- netmon.Event{Kind: netmon.LinkAdded, Link: netmon.Link{Index: 2, Name: "eth0", Up: true, LowerUp: true, Other: true}}
	mon.evs <- netmon.Event{Kind: netmon.AddrAdded, Addr: netmon.Addr{Index: 2, Ifname: "eth0", IP: netip.MustParseAddr("2001:db8::1"),
		PrefixLen: 64, Valid: time.Hour, Preferred: time.Hour, Class: netmon.ClassTemporary, Registrable: true}}
	ag := agent.New(agent.Config{Enable: true}, mon, idleReg{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, err := ag.Status(ctx)
		if err == nil && len(st.Interfaces) == 1 && len(st.Interfaces[0].Addresses) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent never knew the address: %+v %v", st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var buf bytes.Buffer
	logStatus(ctx, ag, slog.New(slog.NewJSONHandler(&buf, nil)))
	for _, want := range []string{`"state":"unknown"`, `"phase":"pending"`, `"kind":"temporary"`, `"iface":"eth0"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("SIGUSR1 JSON lines lack %s:\n%s", want, buf.String())
		}
	}
}
