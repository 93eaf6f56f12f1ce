package agent_test

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/addrreg/addrreg/test/dhcp6test"
	"github.com/addrreg/addrreg/test/topo"
)

// Debian's kea-dhcp6-server (2.2) as the lab's DHCPv6 server (SPEC.md §5):
// it answers Information-Request without option 148, can be made to send
// 148 as a custom empty option, and drops ADDR-REG-INFORM (type 36) as an
// unknown message type.

// startKea runs kea-dhcp6 in the lab's server namespace with a config,
// memfile lease database, pid and lock files all in a temporary directory,
// and waits until it serves eth0. With offer148 it sends option 148 in
// every Reply.
func startKea(t *testing.T, l *lab, offer148 bool) *topo.Proc {
	t.Helper()
	dir := t.TempDir()
	type obj = map[string]any
	options := []obj{{"name": "dns-servers", "data": "2001:db8:1::53"}}
	defs := []obj{}
	if offer148 {
		// Kea 2.2 does not know RFC 9686: define 148 as an empty option
		// and send it whether or not the client asked.
		defs = append(defs, obj{"name": "addr-reg-enable", "code": 148, "type": "empty", "space": "dhcp6"})
		options = append(options, obj{"name": "addr-reg-enable", "code": 148, "space": "dhcp6", "always-send": true})
	}
	return dhcp6test.StartKea(t, l.server, dir, obj{
		"interfaces-config": obj{"interfaces": []string{"eth0"}},
		"lease-database":    obj{"type": "memfile", "persist": false},
		"server-id":         obj{"type": "LL", "persist": false},
		"data-directory":    dir,
		"control-socket":    obj{"socket-type": "unix", "socket-name": filepath.Join(dir, "kea6.sock")},
		"option-def":        defs,
		"option-data":       options,
		"subnet6": []obj{{
			"id": 1, "subnet": prefix1, "interface": "eth0",
			"pools": []obj{{"pool": "2001:db8:1::1000-2001:db8:1::1fff"}},
		}},
		"loggers": []obj{{
			"name": "kea-dhcp6", "severity": "DEBUG", "debuglevel": 99,
			"output_options": []obj{{"output": "stdout"}},
		}},
	})
}

// oroHas148 reports whether an Information-Request asks for option 148.
func oroHas148(m dhcp6test.Packet) bool {
	return slices.Contains(m.Msg.Options.RequestedOptions(), dhcpv6.OptionAddrRegEnable)
}

// Kea answers the Information-Request without option 148: the agent
// registers nothing (RFC 9686 §4.1).
func TestE2EKeaNo148(t *testing.T) {
	l := newLab(t, labOpts{noServer: true})
	kea := startKea(t, l, false)
	ip := addrOf(l.globals(t, 1)[0])
	p := l.startAgent(t)
	p.WaitOutput(t, "registration not offered", 10*time.Second)
	time.Sleep(3 * time.Second)

	var irs []dhcp6test.Packet
	for _, m := range l.sniff.All() {
		if m.Type == dhcpv6.MessageTypeInformationRequest {
			irs = append(irs, m)
		}
	}
	if len(irs) == 0 || !oroHas148(irs[0]) {
		t.Errorf("Information-Requests on the wire: %v; want at least one asking for option 148", irs)
	}
	// Kea did answer: the agent logged that Reply, and so did Kea.
	if !strings.Contains(p.Output(), "Reply to Information-Request") {
		t.Errorf("agent log shows no Reply to its Information-Request")
	}
	if out := kea.Output(); !strings.Contains(out, "DHCP6_PACKET_SEND") || !strings.Contains(out, "REPLY") {
		t.Errorf("Kea log shows no Reply sent")
	}
	if got := l.sniff.Informs(netip.Addr{}); len(got) != 0 {
		t.Errorf("%d ADDR-REG-INFORMs (e.g. %v) though Kea does not offer registration", len(got), got[0])
	}
	if strings.Contains(p.Output(), "registration supported") {
		t.Errorf("agent claims support for %s's link", ip)
	}
}

// Kea sends option 148 but drops ADDR-REG-INFORM: every address is tried
// exactly MRC times with one transaction ID, spaced per RFC 8415 §15, then
// left alone: no storm.
func TestE2EKeaDropsInform(t *testing.T) {
	const irt, mrc = 300 * time.Millisecond, 3
	l := newLab(t, labOpts{noServer: true})
	kea := startKea(t, l, true)
	addrs := []netip.Addr{addrOf(l.globals(t, 1)[0])}
	for _, s := range []string{"2001:db8:1::a1", "2001:db8:1::a2"} {
		l.host.MustExec(t, "ip", "-6", "addr", "add", s+"/64", "dev", "eth0", "nodad")
		addrs = append(addrs, netip.MustParseAddr(s))
	}
	probe := startTimerProbe(t)
	p := l.startAgentNiced(t, "--irt", irt.String(), "--mrc", "3")
	p.WaitOutput(t, "registration supported on link", 10*time.Second)
	for _, ip := range addrs {
		l.sniff.WaitInforms(t, ip, mrc, 5*time.Second)
	}
	p.WaitOutput(t, "registration failed", 5*time.Second)
	lateness := probe.max()
	// Several seconds more: nothing further for any address.
	time.Sleep(5 * time.Second)
	for _, ip := range addrs {
		got := l.sniff.Informs(ip)
		var first, later []dhcp6test.Packet
		for _, m := range got {
			if m.XID == got[0].XID {
				first = append(first, m)
			} else {
				later = append(later, m)
			}
		}
		if len(first) != mrc {
			t.Errorf("%s: first exchange (xid %s) made %d transmissions, want %d (MRC):\n%s", ip, got[0].XID, len(first), mrc, dhcp6test.List(first))
		} else {
			checkRetransmission(t, ip, first, irt, lateness)
		}
		if len(later) > 0 {
			t.Errorf("%s: after the first exchange failed, %d more ADDR-REG-INFORMs within %v (new exchanges, nothing changed on the host):\n%s",
				ip, len(later), time.Since(first[len(first)-1].At).Round(time.Second), dhcp6test.List(later))
		}
		if n := logLines(p.Output(), `msg="registration failed"`, "addr="+ip.String()+" ", "sends=3"); n != 1 {
			t.Errorf("%s: agent logged \"registration failed ... sends=3\" %d times, want once", ip, n)
		}
	}
	if n := strings.Count(kea.Output(), "DHCP6_UNKNOWN_MSG_RECEIVED received unknown message (type 36)"); n < len(addrs)*mrc {
		t.Errorf("Kea logged %d ADDR-REG-INFORMs dropped as unknown, want at least %d", n, len(addrs)*mrc)
	}
}

// checkRetransmission asserts RFC 8415 §15 on one exchange seen on the wire:
// one transaction ID, all from the registered address, and spacing by the
// formula RT1 = IRT ± 10 %, RTn = 2·RTn-1 ± 10 %·RTn-1: RT1 in
// [0.9, 1.1]·IRT, RT2 in [1.71, 2.31]·IRT, and so on. The sniffer's
// timestamps are the kernel's; the agent's timers may fire late on a busy
// machine (lateness, measured meanwhile by a timerProbe), never early.
func checkRetransmission(t *testing.T, ip netip.Addr, got []dhcp6test.Packet, irt, lateness time.Duration) {
	t.Helper()
	const early = 20 * time.Millisecond
	late := 60*time.Millisecond + lateness
	for i, m := range got {
		if m.XID != got[0].XID {
			t.Errorf("%s: transmission %d has xid %s, first had %s", ip, i+1, m.XID, got[0].XID)
		}
		if m.Src != ip {
			t.Errorf("%s: transmission %d sent from %s", ip, i+1, m.Src)
		}
	}
	lo, hi := float64(irt)*0.9, float64(irt)*1.1
	for i := 1; i < len(got); i++ {
		if i > 1 {
			lo, hi = lo*1.9, hi*2.1
		}
		rt := got[i].At.Sub(got[i-1].At)
		if rt < time.Duration(lo)-early || rt > time.Duration(hi)+late {
			t.Errorf("%s: RT%d = %v, want within [%v, %v] (RFC 8415 §15; allowing %v early, %v late)",
				ip, i, rt, time.Duration(lo).Round(time.Millisecond), time.Duration(hi).Round(time.Millisecond), early, late.Round(time.Millisecond))
		}
	}
}

// timerProbe measures how late this machine runs timers while a test
// watches the agent's: other work on a shared machine can delay any
// process's timers by hundreds of milliseconds, which says nothing about
// the agent.
type timerProbe struct {
	stop chan struct{}
	done chan time.Duration
	last time.Duration
}

func startTimerProbe(t *testing.T) *timerProbe {
	p := &timerProbe{stop: make(chan struct{}), done: make(chan time.Duration, 1)}
	go func() {
		var worst time.Duration
		const tick = 50 * time.Millisecond
		for {
			start := time.Now()
			select {
			case <-p.stop:
				p.done <- worst
				return
			case <-time.After(tick):
				worst = max(worst, time.Since(start)-tick)
			}
		}
	}()
	t.Cleanup(func() { p.max() })
	return p
}

// max stops the probe (if running) and returns the worst lateness seen.
func (p *timerProbe) max() time.Duration {
	select {
	case <-p.stop:
	default:
		close(p.stop)
		p.last = <-p.done
	}
	return p.last
}

// logLines counts the log lines that contain every one of subs.
func logLines(out string, subs ...string) int {
	n := 0
	for _, line := range strings.Split(out, "\n") {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

// A server that offers registration but answers no ADDR-REG-INFORM, at the
// agent level (the registrar's own tests check each message's contents):
// MRC transmissions per address, spaced per RFC 8415 §15, then
// "registration failed". A server that answers the second transmission
// ends the exchange there: no third.
func TestE2ERetransmissionSilentServer(t *testing.T) {
	const irt, mrc = 300 * time.Millisecond, 3
	// No SLAAC address (A flag clear): RA-driven lifetime updates would
	// retrigger exchanges, which TestE2EKeaDropsInform covers.
	ra := topo.RA{Other: true, Prefixes: []topo.PIO{{Prefix: prefix1, Valid: 600 * time.Second, Preferred: 300 * time.Second, NoAutonomous: true}}}
	l := newLab(t, labOpts{noServer: true, ra: ra})
	silent, answered := netip.MustParseAddr("2001:db8:1::51"), netip.MustParseAddr("2001:db8:1::52")
	// The server answers every Information-Request with option 148 and
	// only the second transmission of the answered address's INFORM.
	answer := dhcp6test.Answer{Offer148: true}
	dhcp6test.StartResponder(t, l.server, "eth0", func(m dhcp6test.Packet, seen dhcp6test.Seen) []dhcp6test.Send {
		if m.Type == dhcpv6.MessageTypeInformationRequest ||
			m.Type == dhcpv6.MessageTypeAddrRegInform && m.IAAddr == answered && seen.OfXID == 1 {
			return []dhcp6test.Send{answer.To(m)}
		}
		return nil
	})
	for _, ip := range []netip.Addr{silent, answered} {
		l.host.MustExec(t, "ip", "-6", "addr", "add", ip.String()+"/64", "dev", "eth0", "nodad")
	}
	probe := startTimerProbe(t)
	p := l.startAgentNiced(t, "--irt", irt.String(), "--mrc", strconv.Itoa(mrc))
	p.WaitOutput(t, "registration supported on link", 10*time.Second)

	// RT1 + RT2 + RT3 ≤ 1.1·IRT·(1 + 2.1 + 2.1²) ≈ 2.5 s after the first
	// transmission the exchange has failed; wait well beyond.
	first := l.sniff.WaitInforms(t, silent, 1, 5*time.Second)[0]
	time.Sleep(time.Until(first.At.Add(3 * time.Second)))
	lateness := probe.max()
	time.Sleep(time.Until(first.At.Add(5 * time.Second)))

	got := l.sniff.Informs(silent)
	if len(got) != mrc {
		t.Errorf("silent server: %d ADDR-REG-INFORMs for %s, want %d (MRC):\n%s", len(got), silent, mrc, dhcp6test.List(got))
	} else {
		checkRetransmission(t, silent, got, irt, lateness)
	}
	if n := logLines(p.Output(), `msg="registration failed"`, "addr="+silent.String()+" ", "sends=3"); n != 1 {
		t.Errorf("agent logged %d \"registration failed ... sends=3\" for %s, want 1", n, silent)
	}

	got = l.sniff.Informs(answered)
	if len(got) != 2 {
		t.Errorf("server answering the 2nd transmission: %d ADDR-REG-INFORMs for %s, want 2:\n%s", len(got), answered, dhcp6test.List(got))
	} else {
		checkRetransmission(t, answered, got, irt, lateness)
	}
	if n := logLines(p.Output(), "msg=registered", "addr="+answered.String()+" ", "sends=2"); n != 1 {
		t.Errorf("agent logged %d \"registered ... sends=2\" for %s, want 1", n, answered)
	}
}
