package shield

import (
	"os/exec"
	"strings"
)

// offloadFeatures are turned off one by one so that an unsupported one does
// not stop the others: VLAN offloads would move tags out of the frame, and
// receive/segmentation offloads would merge frames beyond the MTU.
var offloadFeatures = []string{"rxvlan", "txvlan", "rx-vlan-stag-hw-parse", "tx-vlan-stag-hw-insert", "gro", "lro", "tso", "gso"}

// disableOffloads turns off offloadFeatures on ifname with ethtool. A
// feature the device does not have, or a missing ethtool, is logged at
// debug level only: the switch works without.
func (s *Switch) disableOffloads(ifname string) {
	for _, f := range offloadFeatures {
		out, err := exec.Command("ethtool", "-K", ifname, f, "off").CombinedOutput()
		if err != nil {
			s.log.Debug("offload not turned off", "iface", ifname, "feature", f, "err", err, "output", strings.TrimSpace(string(out)))
		}
	}
}
