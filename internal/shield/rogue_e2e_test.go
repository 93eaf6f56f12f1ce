package shield

// The issue-6 rogue-server test: the real agent (addrregd), the reference
// server (addrreg-refserver) and a malicious DHCPv6 responder written here,
// joined only through dhcp6-shield. It asserts on what an operator sees: the
// bindings the real server holds (by leasequery), lines in the agent's log,
// and the shield's counters (its --stats socket).

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/addrreg/addrreg/internal/refserver"
	"github.com/addrreg/addrreg/test/dhcp6test"
	"github.com/addrreg/addrreg/test/topo"
)

const (
	rogueLinkPrefix = "fd00::/64" // newShieldNet's link: server fd00::1, host fd00::2, rogue fd00::3
	rogueHostDUID   = "00040102030405060708090a0b0c0d0e0f10"
	// How often the rogue sends unsolicited forged ADDR-REG-REPLYs to every
	// host address it knows.
	rogueSpamEvery = 200 * time.Millisecond
)

// rogueDUID is the rogue server's Server Identifier.
var rogueDUID dhcpv6.DUID = &dhcpv6.DUIDLL{HWType: 1, LinkLayerAddr: net.HardwareAddr{0x02, 0xba, 0xd0, 0, 0, 0x03}}

// rogueServer is a malicious DHCPv6 responder on the rogue's eth0: it
// claims address-registration support (option 148) in a Reply to every
// Information-Request, answers every ADDR-REG-INFORM with a forged
// ADDR-REG-REPLY (right transaction ID, IA Address echoed, sent to the
// registered address, as a real server would) and sprays unsolicited forged
// ADDR-REG-REPLYs at every host address it knows.
type rogueServer struct {
	*dhcp6test.Responder
	mu        sync.Mutex
	hostAddrs map[netip.Addr]bool // unsolicited targets
}

// startRogueServer starts the rogue in nd's namespace until the test ends
// (or Stop). targets are host addresses to forge unsolicited replies to
// from the start; addresses seen in INFORMs are added. Sent labels what it
// sent toward port 546: "reply" (to an Information-Request), "forged" (to
// an INFORM), "unsolicited".
func startRogueServer(t *testing.T, nd *topo.Node, targets ...netip.Addr) *rogueServer {
	t.Helper()
	r := &rogueServer{hostAddrs: map[netip.Addr]bool{}}
	for _, a := range targets {
		r.hostAddrs[a] = true
	}
	answer := dhcp6test.Answer{ServerID: rogueDUID, Offer148: true}
	r.Responder = dhcp6test.StartResponder(t, nd, "eth0", func(m dhcp6test.Packet, _ dhcp6test.Seen) []dhcp6test.Send {
		switch {
		case m.Type == dhcpv6.MessageTypeInformationRequest:
			return []dhcp6test.Send{answer.To(m)}
		case m.Type == dhcpv6.MessageTypeAddrRegInform && m.IAAddr.IsValid():
			r.mu.Lock()
			r.hostAddrs[m.IAAddr] = true
			r.mu.Unlock()
			forged := answer.To(m)
			forged.Dst, forged.Why = m.IAAddr, "forged"
			return []dhcp6test.Send{forged}
		}
		return nil
	})
	// An unsolicited ADDR-REG-REPLY, with a random transaction ID, to
	// every known host address every rogueSpamEvery.
	r.Every(rogueSpamEvery, func() []dhcp6test.Send {
		r.mu.Lock()
		defer r.mu.Unlock()
		var out []dhcp6test.Send
		for a := range r.hostAddrs {
			var xid dhcpv6.TransactionID
			rand.Read(xid[:])
			ia := &dhcpv6.OptIAAddress{IPv6Addr: a.AsSlice(), PreferredLifetime: time.Hour, ValidLifetime: 2 * time.Hour}
			out = append(out, dhcp6test.Send{Msg: answer.AddrRegReply(xid, nil, ia), Dst: a, Why: "unsolicited"})
		}
		return out
	})
	return r
}

// report returns what the rogue sent toward port 546, by why, and how many
// Information-Requests and ADDR-REG-INFORMs it received.
func (r *rogueServer) report() (sent []dhcp6test.Transmission, byWhy map[string]int, infoReqs, informs int) {
	sent = r.Sent()
	byWhy = map[string]int{}
	for _, s := range sent {
		byWhy[s.Why]++
	}
	return sent, byWhy, len(r.Received(dhcpv6.MessageTypeInformationRequest)), len(r.Received(dhcpv6.MessageTypeAddrRegInform))
}

// rogueLab is newShieldNet with server, host and rogue, dhcp6-shield, radvd
// and the reference server in the server's namespace, and the rogue
// responder.
type rogueLab struct {
	sn        *shieldNet
	shield    *topo.Proc
	stats     string
	refserver *topo.Proc
	atServer  *dhcp6test.Sniffer // port 547 in the server's namespace
	atHost    *dhcp6test.Sniffer // port 546 in the host's namespace
	rogue     *rogueServer
}

// newRogueLab builds the network. The server's port is trusted, the host's
// not; the rogue's is trusted only when rogueTrusted (the control).
// serverArgs are extra refserver flags.
func newRogueLab(t *testing.T, rogueTrusted bool, serverArgs ...string) *rogueLab {
	t.Helper()
	sn := newShieldNet(t, "server", "host", "rogue")
	l := &rogueLab{sn: sn}
	srv := sn.nodes["server"]
	rogueFlag := "--port"
	if rogueTrusted {
		rogueFlag = "--trusted"
	}
	l.shield, l.stats = sn.startShield(t, "--trusted", "pserver", "--port", "phost", rogueFlag, "progue")

	// The server is also the link's router: an RA with the O flag (the
	// agent registers only after one) and a SLAAC prefix. The server has an
	// address in the prefix (fd00::1/64 from newShieldNet), so it can answer
	// the registered addresses on-link.
	srv.Sysctl(t, "net.ipv6.conf.eth0.accept_ra", "0")
	l.atServer = dhcp6test.StartSniffer(t, srv, 547)
	l.atHost = dhcp6test.StartSniffer(t, sn.nodes["host"], 546)
	db := filepath.Join(t.TempDir(), "bindings.db")
	args := append([]string{topo.BuildBinary(t, "./cmd/addrreg-refserver"), "-i", "eth0",
		"--prefix", "eth0=" + rogueLinkPrefix, "--db", db, "--leasequery-allow", "::/0", "--log-level", "debug"}, serverArgs...)
	l.refserver = srv.Start(t, "refserver", args...)
	l.refserver.WaitOutput(t, "msg=listening", 10*time.Second)
	srv.StartRadvd(t, topo.RA{Other: true, Prefixes: []topo.PIO{{Prefix: rogueLinkPrefix, Valid: 600 * time.Second, Preferred: 300 * time.Second}}})

	l.rogue = startRogueServer(t, sn.nodes["rogue"], netip.MustParseAddr(sn.addrs["host"].String()))
	return l
}

// hostAddrs waits for the host's static address and its SLAAC address.
func (l *rogueLab) hostAddrs(t *testing.T) []netip.Addr {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var out []netip.Addr
		for _, a := range l.sn.nodes["host"].WaitAddrs(t, "eth0", topo.Global, 15*time.Second) {
			ip, _ := netip.AddrFromSlice(a.IP)
			out = append(out, ip.Unmap())
		}
		if len(out) >= 2 {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("host has %v, want its static and its SLAAC address", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (l *rogueLab) startAgent(t *testing.T) *topo.Proc {
	t.Helper()
	return l.sn.nodes["host"].Start(t, "addrregd", topo.BuildBinary(t, "./cmd/addrregd"),
		"-i", "eth0", "--duid", rogueHostDUID, "--log-level", "debug",
		"--state-file", filepath.Join(t.TempDir(), "state.json")) // never the system's
}

// query asks the real server for the host's bindings, from the server's
// namespace.
func (l *rogueLab) query() refserver.QueryOptions {
	duid, _ := hex.DecodeString(rogueHostDUID)
	return refserver.QueryOptions{Server: netip.AddrPortFrom(netip.MustParseAddr(l.sn.addrs["server"].String()), 547), ClientID: duid}
}

// bindings asks the real server, by leasequery for the host's DUID, which
// addresses it holds.
func (l *rogueLab) bindings(t *testing.T) map[netip.Addr]dhcp6test.Binding {
	t.Helper()
	return dhcp6test.Bindings(t, l.sn.nodes["server"], l.query())
}

// holdServer stops the real server (SIGSTOP) so that the rogue always
// answers first, as a rogue that races the real server hopes to; the
// datagrams the host sends meanwhile wait in the server's socket.
// releaseServer lets it go on.
func (l *rogueLab) holdServer(t *testing.T) {
	t.Helper()
	if err := l.refserver.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Before topo's cleanup, which SIGTERMs it.
	t.Cleanup(func() { _ = l.refserver.Signal(syscall.SIGCONT) })
}

func (l *rogueLab) releaseServer(t *testing.T) {
	t.Helper()
	if err := l.refserver.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

// rogueAtHost counts the messages carrying the rogue's Server Identifier
// that reached port 546 on the host.
func (l *rogueLab) rogueAtHost() int {
	return len(l.atHost.Match(func(m dhcp6test.Packet) bool {
		sid := m.Msg.Options.ServerID()
		return sid != nil && sid.Equal(rogueDUID)
	}))
}

// waitRogueAnswered waits until the rogue has sent a Reply with option 148
// to one of the host's Information-Requests.
func (l *rogueLab) waitRogueAnswered(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, byWhy, _, _ := l.rogue.report(); byWhy["reply"] > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rogue answered no Information-Request within 10 s:\n%s", l.rogue.Dump())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitBindings polls the real server until it holds every address of want.
func (l *rogueLab) waitBindings(t *testing.T, want []netip.Addr, timeout time.Duration) map[netip.Addr]dhcp6test.Binding {
	t.Helper()
	return dhcp6test.WaitBindings(t, l.sn.nodes["server"], l.query(), fmt.Sprintf("every host address %v", want), timeout, dhcp6test.HoldsAll(want...))
}

// waitLog waits until p's output has a line matching re and returns it.
func waitLog(t *testing.T, p *topo.Proc, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindString(p.Output()); m != "" {
			return m
		}
		select {
		case <-p.Done():
			t.Fatalf("%s exited before logging %q", p.Name, re)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %v", p.Name, re, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func logLine(msg string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^.* msg=` + msg + ` .*$`)
}

func registeredRE(a netip.Addr) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^.* msg=registered .*\biface=eth0 addr=` + regexp.QuoteMeta(a.String()) + ` .*$`)
}

var (
	supportedRE     = logLine(`"registration supported on link"`)
	notOfferedRE    = logLine(`"registration not offered on link \(no option 148\): registering nothing"`)
	informSentRE    = logLine(`"ADDR-REG-INFORM sent"`)
	registeredAnyRE = logLine(`registered`)
	alertRE         = regexp.MustCompile(`(?m)^.* msg="dhcpv6-shield drop: security alert" iface=progue reason=client_bound_dhcpv6 .*$`)
	// The registrar's debug lines name the transaction it accepted.
	acceptedRE  = regexp.MustCompile(`(?m)^.* msg="ADDR-REG-REPLY accepted" .*\baddr=(\S+) xid=([0-9a-f]+) .*$`)
	infoReplyRE = regexp.MustCompile(`(?m)^.* msg="Reply to Information-Request" .*\bxid=([0-9a-f]+) addr_reg_enable=(true|false).*$`)
)

// rogueCounters stops the rogue and waits until the shield has seen every
// frame it sent toward port 546; it returns the rogue's port counters and
// what the rogue sent.
func (l *rogueLab) rogueCounters(t *testing.T) (PortStats, []dhcp6test.Transmission, map[string]int) {
	t.Helper()
	l.rogue.Stop()
	sent, byWhy, _, _ := l.rogue.report()
	if errs := l.rogue.Errors(); len(errs) > 0 {
		t.Errorf("rogue send errors: %v", errs)
	}
	var all map[string]PortStats
	for deadline := time.Now().Add(3 * time.Second); ; {
		all = readStats(t, l.stats)
		if all["progue"].Seen[ReasonClientBoundDHCPv6.String()] >= uint64(len(sent)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the rogue sent %d messages toward UDP 546 %v", len(sent), byWhy)
	for _, name := range []string{"pserver", "phost", "progue"} {
		st := all[name]
		t.Logf("shield %s: trusted=%v rx_frames=%d passed=%d dropped=%d drops=%v server_messages=%d tx_frames=%d tx_busy=%d tx_errors=%d rx_errors=%d",
			name, st.Trusted, st.RxFrames, st.Passed, st.Dropped, nonZero(st.Drops), st.ServerMessages, st.TxFrames, st.TxBusy, st.TxErrors, st.RxErrors)
	}
	return all["progue"], sent, byWhy
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// checkAllDropped asserts that the shield dropped, on the rogue's port,
// exactly the n messages the rogue sent toward port 546, as client-bound
// DHCPv6, and nothing else; that it logged a security alert for each
// (or counted the line as rate-limited); and that none reached the host.
func (l *rogueLab) checkAllDropped(t *testing.T, st PortStats, n int) {
	t.Helper()
	if got := l.rogueAtHost(); got != 0 {
		t.Errorf("the host received %d of the rogue's messages on port 546, want 0", got)
	}
	alerts := len(alertRE.FindAllString(l.shield.Output(), -1))
	t.Logf("shield log: %d security alerts for progue, %d lines suppressed", alerts, st.LogSuppressed)
	if uint64(alerts)+st.LogSuppressed != uint64(n) {
		t.Errorf("shield logged %d security alerts for progue and suppressed %d, want %d in all", alerts, st.LogSuppressed, n)
	}
	if n == 0 {
		t.Fatal("the rogue sent nothing toward port 546")
	}
	if got := st.Drops[ReasonClientBoundDHCPv6.String()]; got != uint64(n) {
		t.Errorf("progue drops client_bound_dhcpv6 = %d, the rogue sent %d", got, n)
	}
	if st.Dropped != uint64(n) {
		t.Errorf("progue dropped = %d, want %d: %v", st.Dropped, n, nonZero(st.Drops))
	}
	if st.ServerMessages != uint64(n) {
		t.Errorf("progue server_messages = %d, want %d", st.ServerMessages, n)
	}
}

// attack builds the network (newRogueLab), waits for the host's
// addresses, holds the real server and starts the agent.
func attack(t *testing.T, rogueTrusted bool, serverArgs ...string) (*rogueLab, []netip.Addr, *topo.Proc) {
	t.Helper()
	start := time.Now()
	l := newRogueLab(t, rogueTrusted, serverArgs...)
	t.Logf("network ready after %v", time.Since(start).Round(time.Millisecond))
	addrs := l.hostAddrs(t)
	t.Logf("host addresses %v after %v", addrs, time.Since(start).Round(time.Millisecond))
	l.holdServer(t)
	return l, addrs, l.startAgent(t)
}

// rogueAnsweredFirst waits until the rogue has answered the agent's
// Information-Request, checks that its answer did not decide anything, and
// releases the real server.
func (l *rogueLab) rogueAnsweredFirst(t *testing.T, agent *topo.Proc) {
	t.Helper()
	l.waitRogueAnswered(t)
	time.Sleep(500 * time.Millisecond)
	undecided(t, agent)
	l.releaseServer(t)
}

// undecided asserts that the agent has not yet decided whether the link
// supports registration: the rogue's Reply did not reach it.
func undecided(t *testing.T, agent *topo.Proc) {
	t.Helper()
	out := agent.Output()
	for _, re := range []*regexp.Regexp{supportedRE, notOfferedRE, infoReplyRE} {
		if m := re.FindString(out); m != "" {
			t.Fatalf("the agent took an answer while the real server was stopped, so the rogue's: %s", m)
		}
	}
}

// TestShieldRogueServer is issue 6's end-to-end attack: a rogue DHCPv6
// server on an untrusted port claims registration support and forges
// ADDR-REG-REPLYs. With dhcp6-shield the host registers with the real server
// only, or not at all when the real server does not offer registration; with
// the rogue's port trusted (the control) the attack succeeds.
//
// In every case the real server is held (SIGSTOP) from just before the
// agent starts until the rogue has answered, so the rogue always answers
// first: what the host then believes depends only on the shield.
func TestShieldRogueServer(t *testing.T) {
	// Case A: the real server offers option 148.
	t.Run("shield/server-offers-148", func(t *testing.T) {
		start := time.Now()
		l, addrs, agent := attack(t, false)
		l.rogueAnsweredFirst(t, agent)

		t.Logf("agent: %s", waitLog(t, agent, supportedRE, 10*time.Second))
		for _, a := range addrs {
			t.Logf("agent: %s", waitLog(t, agent, registeredRE(a), 10*time.Second))
		}
		b := l.waitBindings(t, addrs, 5*time.Second)
		t.Logf("real server bindings for the host: %v", b)
		time.Sleep(time.Second) // the rogue keeps spraying
		st, sent, byWhy := l.rogueCounters(t)
		_, _, infoReqs, informs := l.rogue.report()
		if byWhy["reply"] == 0 || byWhy["forged"] == 0 || byWhy["unsolicited"] == 0 {
			t.Errorf("the rogue answered %d Information-Requests and forged %d replies to %d INFORMs, %d unsolicited: the attack was not tried in full",
				infoReqs, byWhy["forged"], informs, byWhy["unsolicited"])
		}
		// Every message the rogue sent toward a client was dropped, and
		// nothing else of the rogue's: no forged Reply or ADDR-REG-REPLY
		// reached the host, so it registered on the real server's answers.
		l.checkAllDropped(t, st, len(sent))
		t.Logf("case A took %v", time.Since(start).Round(time.Millisecond))
	})

	// Case B: the real server does not offer option 148; the rogue does.
	t.Run("shield/server-without-148", func(t *testing.T) {
		start := time.Now()
		l, addrs, agent := attack(t, false, "--no-addr-reg")
		l.rogueAnsweredFirst(t, agent)

		t.Logf("agent: %s", waitLog(t, agent, notOfferedRE, 10*time.Second))
		time.Sleep(3 * time.Second) // registration would start at once
		out := agent.Output()
		for _, re := range []*regexp.Regexp{supportedRE, informSentRE, registeredAnyRE} {
			if m := re.FindAllString(out, -1); len(m) > 0 {
				t.Errorf("the agent registered although the real server does not offer it:\n%s", strings.Join(m, "\n"))
			}
		}
		if got := l.atServer.Informs(netip.Addr{}); len(got) != 0 {
			t.Errorf("the real server saw %d ADDR-REG-INFORMs, want 0:\n%s", len(got), dhcp6test.List(got))
		}
		infoReqs := l.atServer.Count(dhcpv6.MessageTypeInformationRequest)
		if infoReqs == 0 {
			t.Errorf("the real server saw no Information-Request: discovery never reached it")
		}
		if b := l.bindings(t); len(b) != 0 {
			t.Errorf("the real server holds %v for the host, want nothing (host addresses %v)", b, addrs)
		}
		st, sent, byWhy := l.rogueCounters(t)
		if byWhy["reply"] == 0 || byWhy["unsolicited"] == 0 {
			t.Errorf("the rogue sent %v: the attack was not tried in full", byWhy)
		}
		if byWhy["forged"] != 0 {
			t.Errorf("the rogue forged %d ADDR-REG-REPLYs: it saw INFORMs the host should not have sent", byWhy["forged"])
		}
		l.checkAllDropped(t, st, len(sent))
		t.Logf("case B took %v", time.Since(start).Round(time.Millisecond))
	})

	// Control: case B with the rogue's port trusted. The real server stays
	// held until the agent has registered, so every reply the agent took
	// was the rogue's.
	t.Run("control/rogue-trusted", func(t *testing.T) {
		start := time.Now()
		l, addrs, agent := attack(t, true, "--no-addr-reg")
		t.Logf("agent: %s", waitLog(t, agent, supportedRE, 10*time.Second))
		for _, a := range addrs {
			t.Logf("agent: %s", waitLog(t, agent, registeredRE(a), 10*time.Second))
		}
		// The transactions the agent accepted are those the rogue answered.
		sent, _, _, _ := l.rogue.report()
		forged := map[string]string{}
		for _, s := range sent {
			if s.Why != "unsolicited" {
				forged[fmt.Sprintf("%x", s.XID[:])] = s.Why
			}
		}
		out := agent.Output()
		infoReplies := infoReplyRE.FindAllStringSubmatch(out, -1)
		if len(infoReplies) == 0 {
			t.Errorf("agent logged no Reply to its Information-Request")
		}
		for _, m := range infoReplies {
			if forged[m[1]] != "reply" || m[2] != "true" {
				t.Errorf("agent took Reply xid=%s addr_reg_enable=%s, not the rogue's Reply with 148", m[1], m[2])
			}
		}
		acc := acceptedRE.FindAllStringSubmatch(out, -1)
		for _, m := range acc {
			if forged[m[2]] != "forged" {
				t.Errorf("agent accepted ADDR-REG-REPLY xid=%s for %s, which the rogue did not forge", m[2], m[1])
			}
		}
		if len(acc) < len(addrs) {
			t.Errorf("agent accepted %d ADDR-REG-REPLYs, want one per address %v", len(acc), addrs)
		}
		// The agent believes it registered, yet the real server (which
		// has registration off and drops ADDR-REG-INFORM) holds nothing:
		// the rogue's forgeries are all the host got.
		l.releaseServer(t)
		time.Sleep(500 * time.Millisecond)
		if b := l.bindings(t); len(b) != 0 {
			t.Errorf("the real server (--no-addr-reg) holds %v for the host, want nothing", b)
		}
		st, sent, byWhy := l.rogueCounters(t)
		if st.Dropped != 0 {
			t.Errorf("progue (trusted) dropped %d frames, want 0: %v", st.Dropped, nonZero(st.Drops))
		}
		if m := alertRE.FindAllString(l.shield.Output(), -1); len(m) != 0 {
			t.Errorf("shield logged %d security alerts for the trusted progue, want 0: %s", len(m), m[0])
		}
		if got := st.Seen[ReasonClientBoundDHCPv6.String()]; got != uint64(len(sent)) {
			t.Errorf("progue passed %d client-bound DHCPv6 messages, the rogue sent %d %v", got, len(sent), byWhy)
		}
		if st.ServerMessages != uint64(len(sent)) {
			t.Errorf("progue server_messages = %d, want %d", st.ServerMessages, len(sent))
		}
		n := l.rogueAtHost()
		for deadline := time.Now().Add(2 * time.Second); n < len(sent) && time.Now().Before(deadline); n = l.rogueAtHost() {
			time.Sleep(20 * time.Millisecond)
		}
		if n != len(sent) {
			t.Errorf("the host received %d of the rogue's messages on port 546, the rogue sent %d", n, len(sent))
		}
		t.Logf("control took %v", time.Since(start).Round(time.Millisecond))
	})
}
