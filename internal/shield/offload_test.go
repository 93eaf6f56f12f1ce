package shield

import (
	"bytes"
	"log/slog"
	"path"
	"strings"
	"testing"

	"github.com/addrreg/addrreg/test/topo"
)

// TestDisableOffloads: the SIOCETHTOOL ioctl turns off what `ethtool -K
// … off` would on a veth with every one of them on, as `ethtool -k` reads
// it afterwards; an interface that does not exist is a warning.
func TestDisableOffloads(t *testing.T) {
	n := topo.New(t)
	nd := n.Node("off")
	nd.MustExec(t, "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb")
	on := []string{"-K", "va"}
	for _, f := range offloadFeatures {
		on = append(on, f.name, "on")
	}
	nd.Exec(append([]string{"ethtool"}, on...)...) // some may be fixed; ethtool -k below says which
	before := ethtoolK(t, nd, "va")
	var still []string
	if err := nd.Do(func() (err error) {
		still, err = disableOffloads("va")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	after := ethtoolK(t, nd, "va")
	// ethtool -k shows a few features under their old names.
	legacy := map[string]string{"rx-vlan-hw-parse": "rx-vlan-offload", "tx-vlan-hw-insert": "tx-vlan-offload",
		"rx-gro": "generic-receive-offload", "rx-lro": "large-receive-offload", "tx-generic-segmentation": "generic-segmentation-offload"}
	changed := 0
	for _, f := range offloadFeatures {
		var keys []string
		if l, ok := legacy[f.kernel]; ok {
			keys = append(keys, l)
		}
		for k := range before {
			if ok, _ := path.Match(f.kernel, k); ok {
				keys = append(keys, k)
			}
		}
		if len(keys) == 0 {
			t.Errorf("%s: ethtool -k shows no %s", f.name, f.kernel)
		}
		for _, k := range keys {
			b, a := before[k], after[k]
			if strings.HasPrefix(b, "on") && !strings.Contains(b, "[fixed]") {
				changed++
				if !strings.HasPrefix(a, "off") {
					t.Errorf("%s (%s): %q before, %q after; want off", f.name, k, b, a)
				}
			}
		}
	}
	t.Logf("%d features on before, off after", changed)
	if changed < 5 {
		t.Errorf("only %d features were on and changeable before (%v): the test proves little", changed, before)
	}
	if len(still) != 0 {
		t.Errorf("still on: %v", still)
	}

	var logb bytes.Buffer
	s := &Switch{log: slog.New(slog.NewTextHandler(&logb, nil))}
	if err := nd.Do(func() error { s.disableOffloads("nosuchif"); return nil }); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logb.String(), "level=WARN") || !strings.Contains(logb.String(), "iface=nosuchif") {
		t.Errorf("missing interface logged %q, want a warning naming it", logb.String())
	}
}

// ethtoolK reads `ethtool -k`: feature name → "on", "off [fixed]", ….
func ethtoolK(t *testing.T, nd *topo.Node, ifname string) map[string]string {
	t.Helper()
	out := nd.MustExec(t, "ethtool", "-k", ifname)
	m := map[string]string{}
	for line := range strings.Lines(out) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ": "); ok {
			m[k] = v
		}
	}
	return m
}
