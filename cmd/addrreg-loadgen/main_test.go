package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {90, 90 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("empty: %v", got)
	}
}

func TestInform(t *testing.T) {
	a := netip.MustParseAddr("2001:db8:1::1000")
	duid := []byte{0, 2, 0, 0, 0x7e, 0x99, 0, 0, 0, 1}
	b := inform(nil, 0x123456, duid, a, 100, 200)
	m, err := dhcpv6.MessageFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	ia, _ := m.Options.GetOne(dhcpv6.OptionIAAddr).(*dhcpv6.OptIAAddress)
	if m.MessageType != dhcpv6.MessageTypeAddrRegInform || m.TransactionID != [3]byte{0x12, 0x34, 0x56} ||
		!bytes.Equal(m.Options.ClientID().ToBytes(), duid) || ia == nil || !ia.IPv6Addr.Equal(a.AsSlice()) ||
		ia.PreferredLifetime != 100*time.Second || ia.ValidLifetime != 200*time.Second || len(m.Options.Options) != 2 {
		t.Errorf("INFORM %s", m.LongString(0))
	}
}

func TestAddresses(t *testing.T) {
	got := addresses(options{prefix: netip.MustParsePrefix("2001:db8:1::/64"), offset: 0x1000, n: 3})
	want := []string{"2001:db8:1::1000", "2001:db8:1::1001", "2001:db8:1::1002"}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("address %d = %s, want %s", i, got[i], want[i])
		}
	}
}

// TestRelayMode: relay mode sends a Relay-Forward (RFC 8415 §9.2) whose
// peer-address and IA Address are the i-th client's, a distinct client per
// message, and reads the transaction ID back out of a Relay-Reply.
func TestRelayMode(t *testing.T) {
	o := options{prefix: netip.MustParsePrefix("2001:db8:2::/64"), offset: 0x1000}
	link := netip.MustParseAddr("2001:db8:2::1")
	a0, d0 := relayClient(o, 0)
	a1, d1 := relayClient(o, 1)
	if a0.String() != "2001:db8:2::1000" || a1.String() != "2001:db8:2::1001" || bytes.Equal(d0, d1) {
		t.Errorf("clients %s %x, %s %x: want distinct addresses and DUIDs", a0, d0, a1, d1)
	}
	fw := relayForward(nil, link, a1, inform(nil, 0x0a0b0c, d1, a1, 1, 2))
	m, err := dhcpv6.RelayMessageFromBytes(fw)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := m.GetInnerMessage()
	if err != nil || m.MessageType != dhcpv6.MessageTypeRelayForward || !m.LinkAddr.Equal(link.AsSlice()) ||
		!m.PeerAddr.Equal(a1.AsSlice()) || inner.MessageType != dhcpv6.MessageTypeAddrRegInform {
		t.Fatalf("Relay-Forward %s (%v)", m.Summary(), err)
	}
	reply := append([]byte(nil), fw...)
	reply[0] = 13    // RELAY-REPL
	reply[34+4] = 37 // ADDR-REG-REPLY inside
	if xid, ok := relayReplyXID(reply); !ok || xid != 0x0a0b0c {
		t.Errorf("xid %x, %v; want 0a0b0c", xid, ok)
	}
	if _, ok := relayReplyXID(fw); ok {
		t.Error("a Relay-Forward taken for a reply")
	}
	if _, ok := relayReplyXID(reply[:40]); ok {
		t.Error("a truncated Relay-Reply accepted")
	}
}

// FuzzRelayReplyXID: any datagram is a reply with an ID or not; no panic.
func FuzzRelayReplyXID(f *testing.F) {
	a := netip.MustParseAddr("2001:db8:2::1000")
	f.Add(relayForward(nil, a, a, inform(nil, 1, []byte{0, 2}, a, 1, 2)))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = relayReplyXID(b) })
}

// TestRelayRandomKeys: with --keys random every client still has its own
// address (inside the prefix) and DUID, and neither counts up: about half
// of consecutive clients' interface IDs and DUIDs are in descending order.
func TestRelayRandomKeys(t *testing.T) {
	o := options{prefix: netip.MustParsePrefix("2001:db8:2::/64"), offset: 0x1000, random: true}
	const n = 10000
	addrs, duids := map[netip.Addr]bool{}, map[string]bool{}
	var prevA netip.Addr
	var prevD []byte
	downA, downD := 0, 0
	for i := range n {
		a, d := relayClient(o, i)
		if !o.prefix.Contains(a) {
			t.Fatalf("client %d: %s outside %s", i, a, o.prefix)
		}
		addrs[a], duids[string(d)] = true, true
		if i > 0 {
			if a.Less(prevA) {
				downA++
			}
			if bytes.Compare(d, prevD) < 0 {
				downD++
			}
		}
		prevA, prevD = a, d
	}
	if len(addrs) != n || len(duids) != n {
		t.Errorf("%d addresses and %d DUIDs for %d clients: want all distinct", len(addrs), len(duids), n)
	}
	if downA < n*4/10 || downD < n*4/10 {
		t.Errorf("%d of %d consecutive addresses and %d DUIDs descend: want about half (in no order)", downA, n-1, downD)
	}
}

// TestKeysFlag: --keys takes sequential or random; random needs a /64 or
// shorter prefix for its interface IDs. A bad value exits 2 naming it.
func TestKeysFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--keys", "shuffled"}, `invalid --keys "shuffled"`},
		{[]string{"--keys", "random", "--prefix", "2001:db8:2::/96"}, "--keys random needs a --prefix of /64 or shorter"},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"-i", "lo", "--prefix", "2001:db8:2::/64", "--relay", "2001:db8:2::1", "--rate", "1"}, tc.args...)
		if code := run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}
