package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/addrreg/addrreg/agent"
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

// listenControl opens the control socket at path: mode 0600 (root only),
// or 0660 owned by group when one is given. The socket is made under a
// temporary name and renamed into place once its mode is set, so it is
// never reachable with looser permissions. A stale socket (nothing
// answering) is replaced; a live one is left alone and is an error.
func listenControl(path, group string) (net.Listener, error) {
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("control socket group %q: %w", group, err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("control socket group %q: gid %q: %w", group, g.Gid, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another addrregd answers there", path)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", tmp, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, err
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(tmp, -1, gid); err != nil {
			return fail(fmt.Errorf("control socket: chown to group %s: %w", group, err))
		}
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(fmt.Errorf("control socket: chmod %v: %w", mode, err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(fmt.Errorf("control socket: rename %s to %s: %w", tmp, path, err))
	}
	return ln, nil
}

// serveControl answers every connection with the status document as JSON
// and closes it, until ctx ends; it then closes ln and removes path.
func serveControl(ctx context.Context, ln net.Listener, path string, ag *agent.Agent, info daemonInfo, log *slog.Logger) {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer os.Remove(path)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				log.Warn("control socket: accept failed; status no longer answers", "path", path, "err", err)
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
