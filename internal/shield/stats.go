package shield

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// counters are one port's counters, written by the receive loops (a frame
// sent out of a port counts on that port, from the loop that received it)
// and read by Stats.
type counters struct {
	rxFrames, rxBytes, rxErrors atomic.Uint64
	passed, dropped             atomic.Uint64
	serverMessages              atomic.Uint64
	byReason, drops             [numReasons]atomic.Uint64
	txFrames, txErrors, txBusy  atomic.Uint64
	logSuppressed               atomic.Uint64
}

// PortStats are the counters of one port. Drops counts frames dropped by
// DHCPv6-Shield per reason (RFC 7610 §5: a per-port drop counter).
type PortStats struct {
	Name     string `json:"name"`
	Trusted  bool   `json:"trusted"`
	RxFrames uint64 `json:"rx_frames"`
	RxBytes  uint64 `json:"rx_bytes"`
	RxErrors uint64 `json:"rx_errors"`
	Passed   uint64 `json:"passed"`
	Dropped  uint64 `json:"dropped"`
	// Drops holds every drop reason, zero or not.
	Drops map[string]uint64 `json:"drops"`
	// Seen counts received frames by the reason Classify gave, whatever
	// the action.
	Seen map[string]uint64 `json:"seen"`
	// ServerMessages counts DHCPv6-server messages received: passed on a
	// trusted port, dropped on an untrusted one.
	ServerMessages uint64 `json:"server_messages"`
	TxFrames       uint64 `json:"tx_frames"`
	TxBusy         uint64 `json:"tx_busy"`
	TxErrors       uint64 `json:"tx_errors"`
	LogSuppressed  uint64 `json:"log_suppressed"`
}

// Stats is a snapshot of the switch's counters.
type Stats struct {
	Ports []PortStats `json:"ports"`
	MACs  int         `json:"macs"`
}

// dropReasons are the reasons for which Classify can drop.
var dropReasons = []Reason{ReasonClientBoundDHCPv6, ReasonRelayReply, ReasonIncompleteFirstFragment, ReasonUnknownNextHeader, ReasonTruncated}

// Stats returns the counters. It is safe to call while Run runs.
func (s *Switch) Stats() Stats {
	st := Stats{MACs: s.macs.len()}
	for _, p := range s.ports {
		ps := PortStats{
			Name: p.Name, Trusted: p.Trusted,
			RxFrames: p.c.rxFrames.Load(), RxBytes: p.c.rxBytes.Load(), RxErrors: p.c.rxErrors.Load(),
			Passed: p.c.passed.Load(), Dropped: p.c.dropped.Load(),
			ServerMessages: p.c.serverMessages.Load(),
			TxFrames:       p.c.txFrames.Load(), TxBusy: p.c.txBusy.Load(), TxErrors: p.c.txErrors.Load(),
			LogSuppressed: p.c.logSuppressed.Load(),
			Drops:         map[string]uint64{},
			Seen:          map[string]uint64{},
		}
		for _, r := range dropReasons {
			ps.Drops[r.String()] = p.c.drops[r].Load()
		}
		for r := range numReasons {
			ps.Seen[r.String()] = p.c.byReason[r].Load()
		}
		st.Ports = append(st.Ports, ps)
	}
	return st
}

// ServeStats answers every connection on ln with the counters as one JSON
// object and closes it. It returns when ctx ends (closing ln) or Accept fails.
func (s *Switch) ServeStats(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("stats socket %s: accept: %w", ln.Addr(), err)
		}
		_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if err := json.NewEncoder(c).Encode(s.Stats()); err != nil {
			s.log.Debug("stats socket: write", "err", err)
		}
		c.Close()
	}
}
