package agent

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/addrreg/addrreg/netmon"
)

func addrStatus(t *testing.T, st Status, ip string) AddrStatus {
	t.Helper()
	for _, i := range st.Interfaces {
		for _, a := range i.Addresses {
			if a.Addr.String() == ip {
				return a
			}
		}
	}
	t.Fatalf("status has no %s: %+v", ip, st)
	return AddrStatus{}
}

func TestStatusDetails(t *testing.T) {
	h := startOnLink(t, defaults(), true)
	h.reg.lastSent = time.Second
	h.mon.add(global("2001:db8::1", 1800*time.Second))
	static := global("2001:db8::5", netmon.Infinite)
	static.Class, static.Preferred = netmon.ClassStatic, netmon.Infinite
	h.mon.add(static)
	st := h.settle()
	if c := st.Counters; c.Registrations != 2 || c.Replied != 2 || c.Failed != 0 || c.Probes["supported"] != 1 {
		t.Errorf("counters %+v, want 2 started and replied, 1 supported probe", c)
	}
	a := addrStatus(t, st, "2001:db8::1")
	if a.Kind != KindStable || a.Phase != Registered || !a.LastRegistered.Equal(t0.Add(-time.Second)) ||
		a.Told == nil || a.Told.Valid != 1800 || a.Told.Preferred != 900 || a.LastError != "" {
		t.Errorf("SLAAC address status %+v (told %+v)", a, a.Told)
	}
	if !a.NextRefresh.IsZero() || a.RefreshReason != "" {
		t.Errorf("SLAAC address: next refresh %v (%s), want none until its lifetimes change", a.NextRefresh, a.RefreshReason)
	}
	s := addrStatus(t, st, "2001:db8::5")
	if s.Kind != KindStatic || s.Told == nil || s.Told.Valid != 0xffffffff || s.NextRefresh.IsZero() || s.RefreshReason != ReasonStaticInterval {
		t.Errorf("static address status %+v (told %+v)", s, s.Told)
	}
	if ifc := st.Interfaces[0]; ifc.Name != "eth0" || ifc.Index != 2 || ifc.State != IfSupported || !ifc.SeenMO {
		t.Errorf("interface status %+v", ifc)
	}

	// A failed exchange: its error, and a retry scheduled.
	h.reg.mu.Lock()
	h.reg.fail = true
	h.reg.mu.Unlock()
	h.mon.add(global("2001:db8::2", 1800*time.Second))
	st = h.settle()
	f := addrStatus(t, st, "2001:db8::2")
	if f.Phase != Failed || !strings.Contains(f.LastError, "exchange failed") || !f.LastRegistered.IsZero() {
		t.Errorf("failed address status %+v", f)
	}
	// Its retry is due after the backoff (30 s first, with jitter).
	if f.RefreshReason != ReasonRetryBackoff || f.NextRefresh.Before(t0.Add(10*time.Second)) || f.NextRefresh.After(t0.Add(time.Minute)) {
		t.Errorf("failed address: next %v (%q), want a retry_backoff 10–60 s after %v", f.NextRefresh, f.RefreshReason, t0)
	}
	if st.Counters.Failed != 1 {
		t.Errorf("counters %+v, want 1 failed", st.Counters)
	}

	// The JSON uses names.
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"state":"supported"`, `"phase":"registered"`, `"phase":"failed"`, `"kind":"static"`,
		`"refresh_reason":"static_interval"`, `"probes":{"error":0,"supported":1,"unsupported":0}`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("status JSON lacks %s:\n%s", want, b)
		}
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("status JSON does not read back: %v", err)
	}
	if back.Interfaces[0].State != IfSupported || addrStatus(t, back, "2001:db8::1").Phase != Registered {
		t.Errorf("read back %+v", back)
	}
}

func TestSkipTemporary(t *testing.T) {
	cfg := defaults()
	cfg.SkipTemporary = true
	h := startOnLink(t, cfg, true)
	tmp := global("2001:db8::7e", 1800*time.Second)
	tmp.Class = netmon.ClassTemporary
	h.mon.add(tmp)
	h.mon.add(global("2001:db8::1", 1800*time.Second))
	st := h.settle()
	if _, sends := h.reg.snapshot(); len(sends) != 1 || sends[0].addr != global("2001:db8::1", 0).IP {
		t.Fatalf("sends %+v, want only the stable address", sends)
	}
	if a := addrStatus(t, st, "2001:db8::7e"); a.Kind != KindTemporary || a.Phase != Pending {
		t.Errorf("temporary address status %+v, want temporary, pending", a)
	}
}

func TestEnumNamesForAnyValue(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{Registered, `"registered"`}, {Phase(42), `"phase(42)"`}, {Phase(-1), `"phase(-1)"`},
		{IfUnsupported, `"unsupported"`}, {IfState(9), `"ifstate(9)"`},
		{netmon.ClassTemporary, `"temporary"`}, {netmon.StateDADFailed, `"dad-failed"`},
	} {
		b, err := json.Marshal(tc.v)
		if err != nil || string(b) != tc.want {
			t.Errorf("json.Marshal(%#v) = %s, %v; want %s", tc.v, b, err, tc.want)
		}
	}
	var p Phase
	if err := json.Unmarshal([]byte(`"nonsense"`), &p); err == nil {
		t.Error("unknown phase name accepted")
	}
}

// BenchmarkStatus is the owner goroutine's cost of one status snapshot
// (addrregd status, a metrics scrape) with 10,000 addresses on one link:
// the time it answers nothing else.
func BenchmarkStatus(b *testing.B) {
	m := newMachine(withDefaults(Config{}), t0, nil)
	ifc := &iface{index: 2, name: "eth0", disc: discovery{known: supported}, addrs: map[netip.Addr]*addr{}, linkLocals: map[netip.Addr]bool{}}
	m.ifaces[2] = ifc
	for i := range 10000 {
		ip := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		ifc.addrs[ip] = &addr{cur: netmon.Addr{IP: ip, Class: netmon.ClassGlobal}, last: registered, hold: serverHold{kind: holdRegistered},
			note: addrNote{lastRegistered: t0, lastCarried: &Lifetimes{Preferred: 300, Valid: 600}}}
		if i%2 == 0 {
			m.deadlines.Set(key{2, ip}, t0.Add(time.Hour))
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if st := m.report(nil); len(st.Interfaces[0].Addresses) != 10000 {
			b.Fatal(len(st.Interfaces[0].Addresses))
		}
	}
}
