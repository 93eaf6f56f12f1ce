package shield

import (
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// DHCPv6 message types (RFC 8415 §7.3, RFC 9686 §4.2).
const (
	msgSolicit        = 1
	msgAdvertise      = 2
	msgRequest        = 3
	msgReply          = 7
	msgReconfigure    = 10
	msgInfoRequest    = 11
	msgRelayForw      = 12
	msgRelayRepl      = 13
	msgAddrRegInform  = 36
	msgAddrRegReply   = 37
	nhExperimental253 = 253 // RFC 3692 experimental, not recognised
)

type classifyCase struct {
	name  string
	frame []byte
	cfg   Config
	want  Verdict
}

var (
	dot1q = []uint16{0x8100}
	qinq  = []uint16{0x88a8, 0x8100}
	drop  = func(r Reason) Verdict { return Verdict{Drop, r} }
	pass  = func(r Reason) Verdict { return Verdict{Pass, r} }
)

func innerIPv6(chain ...layer) layer {
	f := build(nil, chain...)
	return layer{41, false, f[14:]}
}

func classifyCases() []classifyCase {
	reply := toClient(msgReply)
	solicit := toServer(msgSolicit)
	fragChain := build(nil, frag(0, true), dstOpts(64), toClient(msgReply)) // 8 + 64 + 8 + 12
	fragSolicit := build(nil, frag(0, true), dstOpts(64), toServer(msgSolicit))
	padded := append(build(nil, upper(58, 8)), make([]byte, 30)...)
	shortPL := build(nil, hbh(8), reply)
	binary.BigEndian.PutUint16(shortPL[18:], 12) // Payload Length ends inside UDP
	badVersion := build(nil, reply)
	badVersion[14] = 0x40
	long := build(qinq, longChain(reply)...)

	return []classifyCase{
		// RFC 7610 §5 rule 4: DHCPv6-server messages.
		{name: "Advertise", frame: build(nil, toClient(msgAdvertise)), want: drop(ReasonClientBoundDHCPv6)},
		{name: "Reply", frame: build(nil, reply), want: drop(ReasonClientBoundDHCPv6)},
		{name: "Reconfigure", frame: build(nil, toClient(msgReconfigure)), want: drop(ReasonClientBoundDHCPv6)},
		{name: "ADDR-REG-REPLY", frame: build(nil, toClient(msgAddrRegReply)), want: drop(ReasonClientBoundDHCPv6)},
		{name: "to 546 from any port", frame: build(nil, udp(40000, 546, dhcp(msgReply))), want: drop(ReasonClientBoundDHCPv6)},
		{name: "to 546 empty datagram", frame: build(nil, udp(547, 546, nil)), want: drop(ReasonClientBoundDHCPv6)},
		{name: "Relay-Reply to 547", frame: build(nil, udp(547, 547, dhcp(msgRelayRepl))), want: drop(ReasonRelayReply)},

		// Client messages pass (rule 5).
		{name: "Solicit", frame: build(nil, solicit), want: pass(ReasonPass)},
		{name: "Request", frame: build(nil, toServer(msgRequest)), want: pass(ReasonPass)},
		{name: "Information-Request", frame: build(nil, toServer(msgInfoRequest)), want: pass(ReasonPass)},
		{name: "ADDR-REG-INFORM", frame: build(nil, toServer(msgAddrRegInform)), want: pass(ReasonPass)},
		{name: "Relay-Forward to 547", frame: build(nil, udp(547, 547, dhcp(msgRelayForw))), want: pass(ReasonPass)},
		{name: "empty datagram to 547", frame: build(nil, udp(546, 547, nil)), want: pass(ReasonPass)},
		{name: "TCP to 546", frame: build(nil, upper(6, 20)), want: pass(ReasonPass)},
		{name: "ICMPv6", frame: build(nil, upper(58, 8)), want: pass(ReasonPass)},
		{name: "No Next Header", frame: build(nil, upper(59, 0)), want: pass(ReasonPass)},
		{name: "Ethernet padding ignored", frame: padded, want: pass(ReasonPass)},

		// Extension headers before UDP (rule 1).
		{name: "Hop-by-Hop then Reply", frame: build(nil, hbh(8), reply), want: drop(ReasonClientBoundDHCPv6)},
		{name: "Destination Options then Reply", frame: build(nil, dstOpts(16), reply), want: drop(ReasonClientBoundDHCPv6)},
		{name: "Hop-by-Hop, Destination Options then Solicit", frame: build(nil, hbh(8), dstOpts(8), solicit), want: pass(ReasonPass)},
		{name: "Routing header then Reply", frame: build(nil, routing(), reply), want: drop(ReasonClientBoundDHCPv6)},
		{name: "Mobility, HIP, Shim6 then Reply", frame: build(nil, ext(135, 8), ext(139, 16), ext(140, 8), reply), want: drop(ReasonClientBoundDHCPv6)},
		{name: "long chain then Reply", frame: build(nil, longChain(reply)...), want: drop(ReasonClientBoundDHCPv6)},
		{name: "long chain then Solicit", frame: build(nil, longChain(solicit)...), want: pass(ReasonPass)},
		{name: "AH then Reply", frame: build(nil, ah(), reply), want: drop(ReasonClientBoundDHCPv6)},
		{name: "AH then Solicit", frame: build(nil, ah(), solicit), want: pass(ReasonPass)},
		{name: "Destination Options, AH, Destination Options then Reply", frame: build(nil, dstOpts(8), ah(), dstOpts(8), reply), want: drop(ReasonClientBoundDHCPv6)},

		// Upper layers that end the chain (RFC 7610 §3, §5 NOTE).
		{name: "ESP", frame: build(nil, upper(50, 32)), want: pass(ReasonPass)},
		{name: "Destination Options then ESP", frame: build(nil, dstOpts(8), upper(50, 32)), want: pass(ReasonPass)},
		{name: "IPv6-in-IPv6 carrying Reply", frame: build(nil, innerIPv6(reply)), want: pass(ReasonPass)},

		// Fragments (rule 2).
		{name: "atomic fragment Reply", frame: build(nil, frag(0, false), reply), want: drop(ReasonClientBoundDHCPv6)},
		{name: "atomic fragment Solicit", frame: build(nil, frag(0, false), solicit), want: pass(ReasonPass)},
		{name: "atomic fragment missing UDP", frame: cut(build(nil, frag(0, false), solicit), 8), want: drop(ReasonIncompleteFirstFragment)},
		{name: "first fragment Reply", frame: build(nil, frag(0, true), dstOpts(64), reply), want: drop(ReasonClientBoundDHCPv6)},
		{name: "first fragment Solicit", frame: fragSolicit, want: pass(ReasonPass)},
		{name: "first fragment ends inside extension header", frame: cut(fragChain, 8+32), want: drop(ReasonIncompleteFirstFragment)},
		{name: "first fragment ends inside extension header length", frame: cut(fragChain, 8+1), want: drop(ReasonIncompleteFirstFragment)},
		{name: "first fragment ends just before UDP", frame: cut(fragChain, 8+64), want: drop(ReasonIncompleteFirstFragment)},
		{name: "first fragment of Solicit ends just before UDP", frame: cut(fragSolicit, 8+64), want: drop(ReasonIncompleteFirstFragment)},
		{name: "first fragment ends inside UDP header", frame: cut(fragChain, 8+64+4), want: drop(ReasonIncompleteFirstFragment)},
		{name: "first fragment to 547 without msg-type", frame: cut(build(nil, frag(0, true), udp(546, 547, dhcp(msgRelayRepl))), 8+8), want: drop(ReasonIncompleteFirstFragment)},
		{name: "first fragment to 547 with msg-type", frame: cut(build(nil, frag(0, true), udp(546, 547, dhcp(msgSolicit))), 8+9), want: pass(ReasonPass)},
		{name: "first fragment ends inside Fragment header", frame: cut(build(nil, dstOpts(8), frag(0, true), reply), 8+4), want: drop(ReasonTruncated)},
		{name: "first fragment ends before ESP", frame: cut(build(nil, frag(0, true), upper(50, 32)), 8+4), want: drop(ReasonIncompleteFirstFragment)},
		{name: "non-first fragment", frame: build(nil, frag(1, true), upper(59, 64)), want: pass(ReasonNonFirstFragment)},
		{name: "last fragment looking like Reply", frame: build(nil, frag(100, false), reply), want: pass(ReasonNonFirstFragment)},
		{name: "Hop-by-Hop then non-first fragment", frame: build(nil, hbh(8), frag(8191, true), upper(59, 8)), want: pass(ReasonNonFirstFragment)},

		// Unknown Next Header (rule 3).
		{name: "unknown Next Header, knob drop", frame: build(nil, upper(nhExperimental253, 16)), want: drop(ReasonUnknownNextHeader)},
		{name: "unknown Next Header, knob pass", frame: build(nil, upper(nhExperimental253, 16)), cfg: Config{UnknownNextHeader: Pass}, want: pass(ReasonUnknownNextHeader)},
		{name: "unknown Next Header after Destination Options, knob drop", frame: build(nil, dstOpts(8), upper(nhExperimental253, 16)), want: drop(ReasonUnknownNextHeader)},
		{name: "unknown Next Header after Destination Options, knob pass", frame: build(nil, dstOpts(8), upper(nhExperimental253, 16)), cfg: Config{UnknownNextHeader: Pass}, want: pass(ReasonUnknownNextHeader)},

		// VLAN tags must not hide a message (SPEC §3).
		{name: "802.1Q Reply", frame: build(dot1q, reply), want: drop(ReasonClientBoundDHCPv6)},
		{name: "802.1Q Solicit", frame: build(dot1q, solicit), want: pass(ReasonPass)},
		{name: "QinQ 802.1ad Reply", frame: build(qinq, reply), want: drop(ReasonClientBoundDHCPv6)},
		{name: "QinQ 0x9100 Relay-Reply", frame: build([]uint16{0x9100, 0x8100}, udp(547, 547, dhcp(msgRelayRepl))), want: drop(ReasonRelayReply)},
		{name: "four tags Reply", frame: build([]uint16{0x88a8, 0x88a8, 0x8100, 0x8100}, reply), want: drop(ReasonClientBoundDHCPv6)},
		{name: "QinQ long chain Reply", frame: long, want: drop(ReasonClientBoundDHCPv6)},

		// Not IPv6, and malformed IPv6.
		{name: "ARP", frame: withEtherType(build(nil, reply), 0x0806), want: pass(ReasonNotIPv6)},
		{name: "IPv4", frame: withEtherType(build(nil, reply), 0x0800), want: pass(ReasonNotIPv6)},
		{name: "runt", frame: macHost, want: pass(ReasonNotIPv6)},
		{name: "empty", frame: nil, want: pass(ReasonNotIPv6)},
		{name: "VLAN tag cut short", frame: build(dot1q, reply)[:16], want: pass(ReasonNotIPv6)},
		{name: "IPv6 header cut short", frame: build(nil, reply)[:14+39], want: drop(ReasonTruncated)},
		{name: "IPv6 version not 6", frame: badVersion, want: drop(ReasonTruncated)},
		{name: "unfragmented chain cut short", frame: cut(build(nil, dstOpts(64), reply), 32), want: drop(ReasonTruncated)},
		{name: "Payload Length ends inside UDP header", frame: shortPL, want: drop(ReasonTruncated)},
		{name: "frame shorter than Payload Length, Reply present", frame: build(nil, reply)[:14+40+8], want: drop(ReasonClientBoundDHCPv6)},
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range classifyCases() {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Classify(tc.cfg, tc.frame, false)); diff != "" {
				t.Errorf("Classify(untrusted) (-want +got):\n%s", diff)
			}
			// RFC 7610 §4: everything passes on a trusted port; the reason
			// still says what the frame was.
			want := Verdict{Pass, tc.want.Reason}
			if diff := cmp.Diff(want, Classify(tc.cfg, tc.frame, true)); diff != "" {
				t.Errorf("Classify(trusted) (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLongChainSize(t *testing.T) {
	f := build(nil, longChain(toClient(msgReply))...)
	if n := len(f) - 14 - 40; n < 1024 {
		t.Errorf("long chain is %d octets of extension headers and UDP, want ≥ 1024", n)
	}
}

func TestClassifyNoAllocs(t *testing.T) {
	cases := classifyCases()
	allocs := testing.AllocsPerRun(100, func() {
		for _, tc := range cases {
			Classify(tc.cfg, tc.frame, false)
			Classify(tc.cfg, tc.frame, true)
		}
	})
	if allocs != 0 {
		t.Errorf("Classify allocates %v times per run of %d frames, want 0", allocs, len(cases))
	}
}

func TestReasonString(t *testing.T) {
	seen := map[string]bool{}
	for r := range Reason(NumReasons) {
		s := r.String()
		if seen[s] || s == "" {
			t.Errorf("Reason(%d).String() = %q, duplicate or empty", r, s)
		}
		seen[s] = true
	}
	if got, want := Reason(200).String(), "reason(200)"; got != want {
		t.Errorf("Reason(200).String() = %q, want %q", got, want)
	}
	if got, want := Action(7).String(), "action(7)"; got != want {
		t.Errorf("Action(7).String() = %q, want %q", got, want)
	}
}

func FuzzClassify(f *testing.F) {
	for _, tc := range classifyCases() {
		f.Add(tc.frame, false, tc.cfg.UnknownNextHeader == Pass)
	}
	f.Fuzz(func(t *testing.T, frame []byte, trusted, passUnknown bool) {
		cfg := Config{}
		if passUnknown {
			cfg.UnknownNextHeader = Pass
		}
		var v Verdict
		// Integer average over 10 runs: a stray allocation by the fuzzing
		// machinery does not count, one per Classify does.
		if a := testing.AllocsPerRun(10, func() { v = Classify(cfg, frame, trusted) }); a != 0 {
			t.Fatalf("Classify allocates %v times per frame", a)
		}
		if int(v.Reason) >= NumReasons {
			t.Fatalf("Classify returned reason %d out of range", v.Reason)
		}
		if trusted && v.Action != Pass {
			t.Fatalf("Classify(trusted) = %v, want pass", v)
		}
		if !trusted && v.Action == Drop && v.Reason == ReasonPass {
			t.Fatalf("Classify = %v: drop with reason pass", v)
		}
		if v.Reason != ReasonUnknownNextHeader {
			// The knob changes nothing else.
			other := cfg
			other.UnknownNextHeader = Pass - cfg.UnknownNextHeader
			if w := Classify(other, frame, trusted); w != v {
				t.Fatalf("Classify with knob flipped = %v, want %v", w, v)
			}
		}
	})
}

func BenchmarkClassify(b *testing.B) {
	for _, bc := range []struct {
		name  string
		frame []byte
	}{
		{"typical/Reply", build(nil, toClient(msgReply))},
		{"worst/QinQ-long-chain", build(qinq, longChain(toClient(msgReply))...)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.frame)))
			for b.Loop() {
				Classify(Config{}, bc.frame, false)
			}
		})
	}
}
