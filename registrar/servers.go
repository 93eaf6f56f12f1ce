package registrar

import (
	"errors"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ServerInfo is the server that last answered on an interface: a Reply to
// an Information-Request carrying option 148, or an ADDR-REG-REPLY.
type ServerInfo struct {
	Addr netip.Addr // the reply's source (link-local, or a relay's)
	DUID []byte     // its Server Identifier
	At   time.Time  // when the reply was accepted
}

// servers remembers ServerInfo per interface index for status.
type servers struct {
	mu sync.Mutex
	m  map[int]ServerInfo
	// sendErrors counts failed transmissions by errno name.
	sendErrors map[string]uint64
}

// noteServer records the sender of an accepted reply.
func (r *Registrar) noteServer(d *datagram) {
	si := ServerInfo{Addr: d.src, DUID: append([]byte(nil), d.m.serverID...), At: r.clock.Now()}
	r.srv.mu.Lock()
	if r.srv.m == nil {
		r.srv.m = map[int]ServerInfo{}
	}
	r.srv.m[d.ifindex] = si
	r.srv.mu.Unlock()
}

// Server returns the server that last answered on interface ifindex.
func (r *Registrar) Server(ifindex int) (ServerInfo, bool) {
	r.srv.mu.Lock()
	defer r.srv.mu.Unlock()
	si, ok := r.srv.m[ifindex]
	return si, ok
}

// SendErrors returns how many transmissions failed, by errno name
// ("ENETUNREACH", "EADDRNOTAVAIL" …; "other" when the error carries none).
func (r *Registrar) SendErrors() map[string]uint64 {
	r.srv.mu.Lock()
	defer r.srv.mu.Unlock()
	m := make(map[string]uint64, len(r.srv.sendErrors))
	for k, v := range r.srv.sendErrors {
		m[k] = v
	}
	return m
}

// countingConn counts the send errors of the conn it wraps.
type countingConn struct {
	conn
	r *Registrar
}

func (c *countingConn) send(datagram []byte, ifindex int, src netip.Addr) error {
	err := c.conn.send(datagram, ifindex, src)
	if err != nil {
		name := "other"
		var errno syscall.Errno
		if errors.As(err, &errno) {
			if name = unix.ErrnoName(errno); name == "" {
				name = "errno_" + strconv.Itoa(int(errno))
			}
		}
		c.r.srv.mu.Lock()
		if c.r.srv.sendErrors == nil {
			c.r.srv.sendErrors = map[string]uint64{}
		}
		c.r.srv.sendErrors[name]++
		c.r.srv.mu.Unlock()
	}
	return err
}
