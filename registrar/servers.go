package registrar

import (
	"net/netip"
	"sync"
	"time"
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
