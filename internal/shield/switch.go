package shield

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// Port is one interface of a Switch.
type Port struct {
	Name string
	// Trusted ports may receive DHCPv6-server messages (RFC 7610 §4): a
	// DHCPv6 server or relay is connected there.
	Trusted bool
}

// SwitchConfig configures a Switch.
type SwitchConfig struct {
	Ports  []Port
	Shield Config
	// Logger receives the security log (one line per dropped frame,
	// RFC 7610 §5) and errors. Default slog.Default().
	Logger *slog.Logger
	// LogBurst and LogRate limit the security log lines per port: a burst of
	// LogBurst lines, then LogRate lines per second. The counters are never
	// limited. Defaults 20 and 10.
	LogBurst int
	LogRate  float64
	// KeepOffloads leaves the ports' offload settings alone (by default
	// they are turned off: offload.go).
	KeepOffloads bool
	// MACAge is how long a learned MAC address stays; default 5 minutes.
	MACAge time.Duration
}

// Switch is a userspace layer-2 switch that enforces DHCPv6-Shield on its
// untrusted ports. It reads every port with an AF_PACKET socket, learns source
// MAC addresses, forwards known unicast to its port and floods multicast,
// broadcast and unknown unicast to all other ports. Learning is shared across
// VLANs (one table; tags are forwarded untouched).
type Switch struct {
	cfg   SwitchConfig
	log   *slog.Logger
	ports []*port
	macs  macTable

	// dial opens a port; s.open (packetconn.go) unless a test replaces it.
	dial func(Port) (frameConn, error)
	// now is the clock of MAC ageing and log rate limiting.
	now func() time.Time
}

type port struct {
	Port
	idx int
	// conn is set by Run before the receive loops start and cleared after
	// they end.
	conn frameConn
	c    counters
}

// NewSwitch returns a switch for the given ports; Run opens them.
func NewSwitch(cfg SwitchConfig) (*Switch, error) {
	if len(cfg.Ports) == 0 {
		return nil, errors.New("shield switch: no ports")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LogBurst <= 0 {
		cfg.LogBurst = 20
	}
	if cfg.LogRate <= 0 {
		cfg.LogRate = 10
	}
	if cfg.MACAge <= 0 {
		cfg.MACAge = 5 * time.Minute
	}
	s := &Switch{cfg: cfg, log: cfg.Logger, macs: macTable{m: map[[6]byte]macEntry{}, age: cfg.MACAge}, now: time.Now}
	s.dial = s.open
	seen := map[string]bool{}
	for i, p := range cfg.Ports {
		if seen[p.Name] {
			return nil, fmt.Errorf("shield switch: port %s given twice", p.Name)
		}
		seen[p.Name] = true
		s.ports = append(s.ports, &port{Port: p, idx: i})
	}
	return s, nil
}

// Run opens the ports and switches frames until ctx ends or a port fails. It
// closes its sockets before it returns; no goroutine outlives it.
func (s *Switch) Run(ctx context.Context) error {
	defer func() {
		for _, p := range s.ports {
			if p.conn != nil {
				p.conn.Close()
				p.conn = nil
			}
		}
	}()
	for _, p := range s.ports {
		c, err := s.dial(p.Port)
		if err != nil {
			return err
		}
		p.conn = c
	}
	s.log.Info("dhcp6-shield running", "ports", s.describePorts(), "unknown_next_header", s.cfg.Shield.UnknownNextHeader.String())
	g, ctx := errgroup.WithContext(ctx)
	for _, p := range s.ports {
		g.Go(func() error { return s.serve(ctx, p) })
	}
	err := g.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (s *Switch) describePorts() string {
	var b strings.Builder
	for i, p := range s.ports {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p.Name)
		if p.Trusted {
			b.WriteString("(trusted)")
		}
	}
	return b.String()
}
