package refserver

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// netnsHandle is the network namespace of the thread that opened it, so
// that the server's other reader threads can work in the same one: a Server
// run inside a namespace (topo's Node.Do) looks interfaces up by name and
// index, which only the right namespace answers.
type netnsHandle struct {
	fd       int
	dev, ino uint64
}

const threadNetns = "/proc/thread-self/ns/net"

func currentNetns() (*netnsHandle, error) {
	fd, err := unix.Open(threadNetns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", threadNetns, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat %s: %w", threadNetns, err)
	}
	return &netnsHandle{fd: fd, dev: st.Dev, ino: st.Ino}, nil
}

// enter moves the calling thread, which must be locked to its goroutine,
// into the namespace; it does nothing when the thread is there already (a
// server started from a command never needs setns, nor CAP_SYS_ADMIN).
func (n *netnsHandle) enter() error {
	var st unix.Stat_t
	if err := unix.Stat(threadNetns, &st); err == nil && st.Dev == n.dev && st.Ino == n.ino {
		return nil
	}
	if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter the server's network namespace: %w", err)
	}
	return nil
}

// isProcess reports whether the namespace is the main thread's: then every
// thread of the process is in it (a server run from a command), and no
// goroutine needs to be locked to a thread, which costs a hand-off of the
// thread every time the goroutine blocks.
func (n *netnsHandle) isProcess() bool {
	var st unix.Stat_t
	return unix.Stat("/proc/self/ns/net", &st) == nil && st.Dev == n.dev && st.Ino == n.ino
}

func (n *netnsHandle) close() { unix.Close(n.fd) }
