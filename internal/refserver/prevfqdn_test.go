package refserver

import (
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// TestPrevFQDN: a refresh or move says which name the binding had, so
// that DNS updates (internal/ddns) can follow a rename.
func TestPrevFQDN(t *testing.T) {
	h := testHandler()
	fqdn := func(name string) []byte { return append(append([]byte{0, byte(len(name))}, name...), 0) }
	step := func(at time.Duration, duid []byte, name string, valid uint32) Event {
		t.Helper()
		m := newMsg(dhcpv6.MessageTypeAddrRegInform).opt(dhcpv6.OptionClientID, duid).ia(cliAddr, valid/2, valid)
		if name != "" {
			m = m.opt(dhcpv6.OptionFQDN, fqdn(name))
		}
		_, _, ev, err := h.Handle(t0.Add(at), pkt(cliAddr, m.bytes()))
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	for _, tc := range []struct {
		duid       []byte
		name       string
		valid      uint32
		kind       EventKind
		fqdn, prev string
	}{
		{clientDUID, "h1", 100, EventRegister, "h1", ""},
		{clientDUID, "h1", 100, EventRefresh, "h1", "h1"},
		{clientDUID, "h2", 100, EventRefresh, "h2", "h1"},
		{otherDUID, "h3", 100, EventMove, "h3", "h2"},
		{otherDUID, "", 100, EventRefresh, "", "h3"},
		{otherDUID, "h4", 100, EventRefresh, "h4", ""},
		{otherDUID, "", 0, EventDeregister, "h4", ""}, // the binding removed, with its name
	} {
		ev := step(time.Second, tc.duid, tc.name, tc.valid)
		if ev.Kind != tc.kind || ev.Binding.FQDN != tc.fqdn || ev.PrevFQDN != tc.prev {
			t.Errorf("%s %q: %v fqdn %q prev %q; want %v %q %q", tc.duid, tc.name, ev.Kind, ev.Binding.FQDN, ev.PrevFQDN, tc.kind, tc.fqdn, tc.prev)
		}
	}
}
