package agent_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/addrreg/addrreg/test/dhcp6test"
	"github.com/addrreg/addrreg/test/topo"
)

// Debian's dhclient -6 -S (stateless: Information-Request) on the same
// interface as addrregd: dhclient binds [link-local%eth0]:546 with
// SO_REUSEADDR (SPEC.md §5). addrregd must register its addresses beside it
// and never take the Reply meant for dhclient.
//
// Both clients are running, each retransmitting its Information-Request,
// when the server comes up: it answers both to the same link-local address
// and port.
func TestE2EDhclientCoexistence(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/dhclient"); err != nil {
		t.Fatalf("dhclient not installed (apt-get install isc-dhcp-client): %v", err)
	}
	for _, order := range []string{"dhclient first", "addrregd first"} {
		t.Run(order, func(t *testing.T) {
			l := newLab(t, labOpts{noServer: true})
			ip := addrOf(l.globals(t, 1)[0])
			var dh *dhclient
			var agent *topo.Proc
			if order == "dhclient first" {
				dh = startDhclient(t, l)
				agent = l.startAgent(t)
				agent.WaitOutput(t, "agent started", 10*time.Second)
			} else {
				agent = l.startAgent(t)
				agent.WaitOutput(t, "Information-Request sent", 10*time.Second)
				dh = startDhclient(t, l)
			}
			ss := l.host.MustExec(t, "ss", "-Hulpn", "sport = :546")
			if !strings.Contains(ss, "dhclient") {
				t.Fatalf("dhclient does not hold port 546: %q", ss)
			}
			t.Logf("port 546 on the host:\n%s", strings.TrimSpace(ss))
			// Binding dhclient's link-local:546 too (SO_REUSEADDR) would
			// take its unicast Replies (SPEC.md §5).
			for _, line := range strings.Split(ss, "\n") {
				if strings.Contains(line, "addrregd") && strings.Contains(line, "fe80:") {
					t.Errorf("addrregd binds the link-local port 546 beside dhclient: %s", line)
				}
			}

			l.startRefserver(t)
			// (a) dhclient got its Reply and ran its script as a
			// stateless client does (reason RENEW6, dhc6.c start_informed).
			dh.proc.WaitOutput(t, "PRC: Done.", 20*time.Second)
			dh.waitReason(t, "RENEW6", 5*time.Second)
			// (b) addrregd learnt support and registered its address.
			agent.WaitOutput(t, "registration supported on link", 10*time.Second)
			b := l.waitBindings(t, ip.String(), 10*time.Second, func(b map[netip.Addr]dhcp6test.Binding) bool { _, ok := b[ip]; return ok })
			if b[ip].DUID != testDUID {
				t.Errorf("binding %s has DUID %s, want addrregd's %s", ip, b[ip].DUID, testDUID)
			}
			// Each client's Information-Request is its own: two client IDs
			// on the wire, both from the link-local address.
			ids := map[string]bool{}
			for _, m := range l.sniff.All() {
				if m.Type == dhcpv6.MessageTypeInformationRequest {
					if cid := m.Msg.Options.ClientID(); cid != nil {
						ids[string(cid.ToBytes())] = true
					}
				}
			}
			if len(ids) != 2 {
				t.Errorf("Information-Requests from %d client IDs, want 2 (dhclient and addrregd)", len(ids))
			}
			if strings.Contains(agent.Output(), "level=ERROR") {
				t.Errorf("addrregd logged an error beside dhclient")
			}
		})
	}
}

// dhclient is Debian's dhclient -6 -S running on the host, with a script
// that records the reasons it is called with.
type dhclient struct {
	proc      *topo.Proc
	reasonLog string
}

func startDhclient(t *testing.T, l *lab) *dhclient {
	t.Helper()
	dir := t.TempDir()
	d := &dhclient{reasonLog: filepath.Join(dir, "reasons")}
	// Not dhclient-script: it would rewrite the real /etc/resolv.conf.
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$reason\" >>"+d.reasonLog+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d.proc = l.host.Start(t, "dhclient", "/usr/sbin/dhclient", "-6", "-S", "-v", "-d", "-1",
		"-sf", script, "-lf", filepath.Join(dir, "lease"), "-pf", filepath.Join(dir, "pid"), "eth0")
	d.proc.WaitOutput(t, "XMT: Info-Request", 10*time.Second)
	return d
}

// waitReason waits until dhclient has run its script with reason.
func (d *dhclient) waitReason(t *testing.T, reason string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(d.reasonLog)
		for _, r := range strings.Fields(string(b)) {
			if r == reason {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("dhclient never ran its script with reason %s; reasons: %q", reason, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
