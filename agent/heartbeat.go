package agent

import (
	"fmt"
	"time"
)

// Summary is the one-line state a supervisor shows (systemd's STATUS=).
type Summary struct {
	Interfaces int // interfaces watched (--interface, --exclude-interface)
	Supported  int // of them, where a server asked for registrations (option 148)
	Addresses  int // addresses known on the watched interfaces
	Registered int // of them, held by a server
}

func (s Summary) String() string {
	return fmt.Sprintf("%d/%d interfaces support registration, %d/%d addresses registered",
		s.Supported, s.Interfaces, s.Registered, s.Addresses)
}

// defaultHeartbeat is Config.HeartbeatInterval's default.
const defaultHeartbeat = 10 * time.Second

// summary counts what the owner loop holds. Called only from Run's goroutine.
func (a *Agent) summary() Summary {
	var s Summary
	for _, ifc := range a.ifaces {
		if !a.wanted(ifc.name) {
			continue
		}
		s.Interfaces++
		if ifc.state == IfSupported {
			s.Supported++
		}
		for _, ad := range ifc.addrs {
			s.Addresses++
			if ad.phase == Registered {
				s.Registered++
			}
		}
	}
	return s
}

// startHeartbeat calls Config.Heartbeat now and then every
// HeartbeatInterval, always from the owner loop (beat is one of its select
// cases): a loop that is wedged stops beating, and a supervisor's watchdog
// notices. It returns the channel the timer signals, the function that
// re-arms it after a beat and the one that stops it.
func (a *Agent) startHeartbeat() (beat <-chan struct{}, rearm func(), stop func()) {
	if a.cfg.Heartbeat == nil {
		return nil, func() {}, func() {}
	}
	c := make(chan struct{}, 1)
	fire := func() {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	t := a.clock.AfterFunc(0, fire)
	return c, func() { t.Reset(a.cfg.HeartbeatInterval) }, func() { t.Stop() }
}
