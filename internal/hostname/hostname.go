// Package hostname reads the host's name and notices when it changes:
// addrregd sends the name in the Client FQDN option (RFC 4704) of its
// registrations and registers again when `hostnamectl set-hostname` (or
// anything else calling sethostname(2)) renames the host.
//
// The name is the kernel's (uname(2)'s nodename, of the caller's UTS
// namespace): the one systemd-networkd sends in DHCPv6 (gethostname_strict),
// which hostnamectl sets along with the static name. A change is noticed
// without polling: every sethostname(2) wakes poll(2) on
// /proc/sys/kernel/hostname with POLLPRI|POLLERR (the kernel's sysctl poll
// support, kernel/utsname_sysctl.c; seen on Linux 6.1, 6.12 and 6.18). The
// wake-up is shared by all UTS namespaces, so a
// rename in another one wakes the watcher too: it reads the name again and
// reports only a real change. Where that file cannot be opened (/proc not
// mounted, or mounted with subset=pid), the watcher reads uname(2) every
// Options.Interval instead.
//
// It is internal to addrregd, not a supported API.
package hostname

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/scheduler"
)

// ProcPath is the sysctl file whose poll(2) reports host name changes.
const ProcPath = "/proc/sys/kernel/hostname"

// DefaultInterval is how often a watcher without ProcPath reads the name.
const DefaultInterval = 2 * time.Second

// Read returns the kernel's host name in the caller's UTS namespace.
func Read() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "" // uname(2) cannot fail with a valid buffer
	}
	return unix.ByteSliceToString(u.Nodename[:])
}

// Specific reports whether name names this host, rather than being no name
// at all: empty, the kernel's "(none)" (never set), or a localhost name
// (RFC 6761 §6.3, and the Red Hat localdomain forms). systemd-networkd
// (gethostname_strict, is_localhost) and NetworkManager
// (nm_utils_is_specific_hostname) send no name in those cases; neither do we.
func Specific(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "", "(none)", "localhost", "localhost.", "localhost.localdomain", "localhost.localdomain.",
		"localhost6", "localhost6.localdomain6":
		return false
	}
	for _, s := range []string{".localhost", ".localhost.", ".localhost.localdomain", ".localhost.localdomain."} {
		if strings.HasSuffix(n, s) {
			return false
		}
	}
	return true
}

// Options configure a Watcher. The zero value watches ProcPath.
type Options struct {
	// Path is the file to poll (default ProcPath). Tests point it
	// elsewhere to make the watcher fall back to reading periodically.
	Path string
	// Interval is the period of the fallback (default DefaultInterval).
	Interval time.Duration
	// Clock drives the fallback's period (default scheduler.RealClock()).
	Clock scheduler.Clock
	// Read returns the current name (default Read; with Path, the
	// watcher reads that file instead).
	Read func() string
}

// Watcher reports the host's name each time it changes. Next is for one
// goroutine at a time; Close may be called from any.
type Watcher struct {
	fd       int // the open Path, or -1: read every interval
	wake     int // eventfd that ends a poll when Next's context ends
	read     func() string
	clock    scheduler.Clock
	interval time.Duration
	last     string

	mu     sync.Mutex
	closed bool
}

// New opens a watcher and reads the current name (Current). It fails only
// when it cannot make its eventfd; a Path it cannot open makes it read the
// name every Interval instead (Polling).
func New(o Options) (*Watcher, error) {
	w := &Watcher{fd: -1, read: o.Read, clock: o.Clock, interval: o.Interval}
	if w.read == nil {
		w.read = Read
	}
	if w.clock == nil {
		w.clock = scheduler.RealClock()
	}
	if w.interval <= 0 {
		w.interval = DefaultInterval
	}
	path := o.Path
	if path == "" {
		path = ProcPath
	}
	if fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("hostname: eventfd: %w", err)
		}
		w.fd, w.wake = fd, wake
		if o.Read == nil {
			w.read = w.readFile
		}
	}
	w.last = w.read()
	return w, nil
}

// Polling reports whether the watcher reads the name every Interval
// because Path could not be opened.
func (w *Watcher) Polling() bool { return w.fd < 0 }

// Current is the name Next last returned, or New read.
func (w *Watcher) Current() string { return w.last }

// Next waits until the name differs from Current and returns the new one,
// or ctx's error.
func (w *Watcher) Next(ctx context.Context) (string, error) {
	for {
		if err := w.wait(ctx); err != nil {
			return "", err
		}
		if name := w.read(); name != w.last {
			w.last = name
			return name, nil
		}
	}
}

// wait blocks until the name may have changed.
func (w *Watcher) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if w.fd < 0 {
		fired := make(chan struct{})
		t := w.clock.AfterFunc(w.interval, func() { close(fired) })
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-fired:
			return nil
		}
	}
	stop := context.AfterFunc(ctx, w.interrupt)
	defer stop()
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLPRI | unix.POLLERR}, {Fd: int32(w.wake), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("hostname: poll %s: %w", ProcPath, err)
		}
		if fds[1].Revents != 0 {
			var b [8]byte
			unix.Read(w.wake, b[:]) // reset the eventfd
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if fds[0].Revents&unix.POLLNVAL != 0 {
			return fmt.Errorf("hostname: poll %s: %w", ProcPath, unix.EBADF)
		}
		if fds[0].Revents != 0 {
			return nil
		}
	}
}

// interrupt ends a poll under way (Next's context ended).
func (w *Watcher) interrupt() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed && w.fd >= 0 {
		unix.Write(w.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
}

// readFile reads the name from the open Path.
func (w *Watcher) readFile() string {
	var b [256]byte // HOST_NAME_MAX is 64
	n, err := unix.Pread(w.fd, b[:], 0)
	if err != nil || n < 0 {
		return Read()
	}
	return string(bytes.TrimRight(b[:n], "\n"))
}

// Close releases the watcher's descriptors. A Next under way must have
// returned (its context ended) first.
func (w *Watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if w.fd >= 0 {
		unix.Close(w.wake)
		return unix.Close(w.fd)
	}
	return nil
}
