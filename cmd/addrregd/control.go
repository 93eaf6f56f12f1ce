package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/addrreg/addrreg/agent"
	"github.com/addrreg/addrreg/internal/ctlsock"
)

// defaultControlSocket is in the unit's RuntimeDirectory=addrregd.
const defaultControlSocket = "/run/addrregd/control.sock"

// statusSchema is the version of the status document (doc/status.md). It
// changes only when a field changes meaning or goes away; fields are added
// without changing it.
const statusSchema = 1

// statusDoc is what the control socket answers: the daemon, then the
// agent's snapshot (its fields inline).
type statusDoc struct {
	Schema int        `json:"schema"`
	Daemon daemonInfo `json:"daemon"`
	agent.Status
}

type daemonInfo struct {
	Version string    `json:"version"`
	PID     int       `json:"pid"`
	DUID    string    `json:"duid"`
	Started time.Time `json:"started"`
	Now     time.Time `json:"now"`
	// RegisterTemporary is --register-temporary: false keeps temporary
	// addresses off the server.
	RegisterTemporary bool `json:"register_temporary"`
	Enable            bool `json:"enable"`
}

// serveControl answers every connection with the status document as JSON
// and closes it, until ctx ends; it then closes ln (removing its file).
func serveControl(ctx context.Context, ln *ctlsock.Socket, ag *agent.Agent, info daemonInfo, log *slog.Logger) {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				log.Warn("control socket: accept failed; status no longer answers", "path", ln.Addr().String(), "err", err)
			}
			return
		}
		// One at a time: each answer is a few kilobytes, built by the
		// agent between two events.
		answerControl(ctx, c, ag, info, log)
	}
}

func answerControl(ctx context.Context, c net.Conn, ag *agent.Agent, info daemonInfo, log *slog.Logger) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := ag.Status(sctx)
	if err != nil {
		log.Warn("control socket: agent did not answer", "err", err)
		return
	}
	info.Now = time.Now()
	if err := json.NewEncoder(c).Encode(statusDoc{Schema: statusSchema, Daemon: info, Status: st}); err != nil {
		log.Debug("control socket: write", "err", err)
	}
}
