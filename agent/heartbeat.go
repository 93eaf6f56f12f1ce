package agent

import "time"

// defaultHeartbeat is Config.HeartbeatInterval's default.
const defaultHeartbeat = 10 * time.Second

// summarize counts what the machine holds. The heartbeat is an effect of
// the machine's wake-up (machine.wakeUp), performed by the owner loop: a
// loop that is wedged stops beating, and a supervisor's watchdog notices.
func (m *machine) summarize() Summary {
	var s Summary
	for _, ifc := range m.ifaces {
		if !m.wanted(ifc.name) {
			continue
		}
		s.Interfaces++
		if ifc.disc.state() == IfSupported {
			s.Supported++
		}
		for _, ad := range ifc.addrs {
			s.Addresses++
			if ad.phase() == Registered {
				s.Registered++
			}
		}
	}
	return s
}
