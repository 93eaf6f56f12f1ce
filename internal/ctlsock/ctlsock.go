// Package ctlsock opens the unix control sockets of addrreg's daemons
// (addrregd status, addrreg-refserver history): owner-only by default,
// optionally readable by one group, never reachable with looser modes.
//
// Under systemd the socket is the .socket unit's (addrregd.socket,
// addrreg-refserver.socket): systemd makes it with SocketMode= and
// SocketGroup= before the daemon starts and passes it (sd_listen_fds(3),
// go-systemd's activation package), so a DynamicUser= daemon needs neither
// a writable /run nor membership of the group. Started any other way
// (OpenRC, a shell, a test), the daemon makes the socket itself.
package ctlsock

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
)

// passed holds the unix listeners systemd passed, by path, taken once from
// the environment (which activation.Files then clears, so that no child
// inherits them).
var passed struct {
	once sync.Once
	lns  map[string]net.Listener
}

// inherited returns, and hands out only once, the listener systemd passed
// for path.
func inherited(path string) (net.Listener, bool) {
	passed.once.Do(func() {
		passed.lns = map[string]net.Listener{}
		for _, f := range activation.Files(true) {
			ln, err := net.FileListener(f)
			f.Close() // FileListener made its own copy
			if err != nil {
				continue // not a listening socket: not ours
			}
			if _, ok := ln.Addr().(*net.UnixAddr); !ok {
				ln.Close()
				continue
			}
			passed.lns[ln.Addr().String()] = ln
		}
	})
	ln, ok := passed.lns[path]
	delete(passed.lns, path)
	return ln, ok
}

// Listen opens the socket at path. The one systemd passed for path
// (socket activation) is taken as it is, its mode and group being the
// .socket unit's (Socket.Activated; group is then not applied). Otherwise
// it is made: mode 0600, or 0660 owned by group when one is given, under a
// temporary name renamed into place once its mode is set. A stale socket
// (nothing answering) is replaced; a live one is left alone and is an
// error. Closing the Socket removes path, unless another daemon has put its
// own socket there since or systemd made it.
func Listen(path, group string) (*Socket, error) {
	if ln, ok := inherited(path); ok {
		return &Socket{Listener: ln, path: path, Activated: true}, nil
	}
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
		return nil, fmt.Errorf("control socket %s: another daemon answers there", path)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", tmp, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	fail := func(err error) (*Socket, error) {
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
	fi, err := os.Stat(path)
	if err != nil {
		return fail(fmt.Errorf("control socket: %w", err))
	}
	return &Socket{Listener: ln, path: path, fi: fi}, nil
}

// Socket is a listening control socket.
type Socket struct {
	net.Listener
	// Activated: systemd made the socket and passed it; its file is
	// systemd's to remove.
	Activated bool
	path      string
	fi        os.FileInfo
}

// Close stops listening and removes the socket file if it is still ours.
func (s *Socket) Close() error {
	err := s.Listener.Close()
	if s.Activated {
		return err
	}
	if fi, serr := os.Stat(s.path); serr == nil && os.SameFile(fi, s.fi) {
		_ = os.Remove(s.path)
	}
	return err
}
