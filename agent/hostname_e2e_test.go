package agent_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/addrreg/addrreg/test/dhcp6test"
	"github.com/addrreg/addrreg/test/topo"
)

// fqdnOf is the Client FQDN an INFORM carries, as the reference server
// records it ("" without the option), and its flags.
func fqdnOf(p dhcp6test.Packet) (string, uint8) {
	f := p.Msg.Options.FQDN()
	if f == nil || f.DomainName == nil {
		return "", 0
	}
	return strings.Join(f.DomainName.Labels, "."), f.Flags
}

// The host's name in every registration, by default, and a rename at run
// time: addrregd runs in a UTS namespace of its own (unshare --uts: the
// machine's name is never touched), the test renames that namespace as
// hostnamectl would (sethostname(2), here nsenter + hostname), and within
// seconds every registered address is registered again with the new name,
// in a new exchange (new transaction ID), with no restart and no link
// event; a rename to localhost registers them again with no name.
func TestE2EHostName(t *testing.T) {
	l := newLab(t, labOpts{tempaddr: true})
	addrs := l.globals(t, 2) // stable + temporary
	ctl := filepath.Join(t.TempDir(), "control.sock")
	p := l.host.Start(t, "addrregd", "unshare", "--uts", "sh", "-c", `hostname e2e-first.example.com && exec "$0" "$@"`,
		topo.BuildBinary(t, "./cmd/addrregd"), "-i", "eth0", "--duid", testDUID, "--log-level", "debug",
		"--state-file", l.statePath(t), "--control-socket", ctl, "--rate", "4", "--burst", "1")
	p.WaitOutput(t, "following the host name", 10*time.Second)
	// ip netns exec, sh and unshare exec each other: p's PID is addrregd's.
	pid := fmt.Sprint(p.Pid())
	rename := func(name string) time.Time {
		t.Helper()
		l.host.MustExec(t, "nsenter", "--target", pid, "--uts", "hostname", name)
		return time.Now()
	}
	informs := func(ip netip.Addr, since time.Time, name string) func(dhcp6test.Packet) bool {
		return func(m dhcp6test.Packet) bool {
			got, _ := fqdnOf(m)
			return m.Type == dhcpv6.MessageTypeAddrRegInform && m.IAAddr == ip && !m.At.Before(since) && got == name
		}
	}
	first := map[netip.Addr]dhcpv6.TransactionID{}
	for _, a := range addrs {
		ip := addrOf(a)
		m := l.sniff.Wait(t, ip.String()+" registered as e2e-first.example.com", 1, 10*time.Second, informs(ip, time.Time{}, "e2e-first.example.com"))[0]
		if _, flags := fqdnOf(m); flags != 0x01 {
			t.Errorf("%s: Client FQDN flags %#x, want S (0x01) as networkd and NetworkManager", ip, flags)
		}
		first[ip] = m.XID
	}
	l.waitBindings(t, "both addresses bound", 10*time.Second, dhcp6test.HoldsAll(addrOf(addrs[0]), addrOf(addrs[1])))

	at := rename("e2e-second")
	var last time.Time
	for _, a := range addrs {
		ip := addrOf(a)
		m := l.sniff.Wait(t, ip.String()+" registered again as e2e-second", 1, 5*time.Second, informs(ip, at, "e2e-second"))[0]
		if m.XID == first[ip] {
			t.Errorf("%s: re-registered with the first registration's transaction ID %v", ip, m.XID)
		}
		if m.At.After(last) {
			last = m.At
		}
	}
	t.Logf("renamed at %s; both addresses registered again by %v later", at.Format("15:04:05.000"), last.Sub(at).Round(time.Millisecond))
	if !strings.Contains(l.refserver.Output(), "fqdn=e2e-second") {
		t.Errorf("the reference server logged no registration with fqdn=e2e-second")
	}
	out := l.host.MustExec(t, topo.BuildBinary(t, "./cmd/addrregd"), "status", "--json", "--control-socket", ctl)
	var st struct{ FQDN string }
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.FQDN != "e2e-second" {
		t.Errorf("addrregd status: fqdn %q (%v), want e2e-second: %s", st.FQDN, err, out)
	}

	// localhost is no name (systemd-networkd and NetworkManager send none).
	at = rename("localhost")
	for _, a := range addrs {
		ip := addrOf(a)
		l.sniff.Wait(t, ip.String()+" registered again with no name", 1, 5*time.Second, informs(ip, at, ""))
	}
	if strings.Contains(p.Output(), "netlink resync") || strings.Count(p.Output(), `msg="discovering registration support"`) > 1 {
		t.Errorf("the rename made addrregd resync or rediscover:\n%s", p.Output())
	}
}
