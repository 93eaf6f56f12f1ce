package shield

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLimiter(t *testing.T) {
	l := newLimiter(3, 2)
	t0 := time.Unix(1000, 0)
	got := 0
	for range 10 {
		if l.allow(t0) {
			got++
		}
	}
	if got != 3 {
		t.Errorf("burst allowed %d lines, want 3", got)
	}
	if n := l.takeSuppressed(); n != 7 {
		t.Errorf("suppressed %d, want 7", n)
	}
	if !l.allow(t0.Add(500*time.Millisecond)) || l.allow(t0.Add(500*time.Millisecond)) {
		t.Errorf("after 0.5 s at 2 lines/s, want exactly one line")
	}
}

func TestIPv6Addrs(t *testing.T) {
	src, dst := "fe80::1", "ff02::1:2"
	type result struct {
		Src, Dst string
		OK       bool
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		want  result
	}{
		{"untagged", build(nil, toClient(msgReply)), result{src, dst, true}},
		{"802.1Q", build([]uint16{0x8100}, toClient(msgReply)), result{src, dst, true}},
		{"QinQ", build([]uint16{0x88a8, 0x8100}, toClient(msgReply)), result{src, dst, true}},
		{"IPv6 header cut short", build(nil, toClient(msgReply))[:14+39], result{}},
		{"not IPv6", withEtherType(build(nil, toClient(msgReply)), 0x0800), result{}},
		{"runt", build(nil, toClient(msgReply))[:13], result{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, d, ok := ipv6Addrs(tc.frame)
			got := result{OK: ok}
			if ok {
				got.Src, got.Dst = s.String(), d.String()
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ipv6Addrs (-want +got):\n%s", diff)
			}
		})
	}
}
