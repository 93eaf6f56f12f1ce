package refserver

import (
	"fmt"
	"net/netip"
	"time"
)

// Packet is one received UDP datagram with what the socket told about it.
type Packet struct {
	Data    []byte
	Src     netip.AddrPort // IPv6 source address and UDP source port
	Dst     netip.Addr     // IPv6 destination address (IPV6_PKTINFO)
	Iface   string         // receiving interface
	IfIndex int
}

// EventKind is what a handled message did.
type EventKind int

// Event kinds. The first five change bindings and are written to the
// database before any reply that depends on them is sent.
const (
	EventNone EventKind = iota
	EventRegister
	EventRefresh
	EventMove
	EventDeregister
	EventExpire
	EventReject
	EventInfoReply
	EventLeasequery
)

var eventNames = [...]string{"none", "register", "refresh", "move", "deregister", "expire", "reject", "info-reply", "leasequery"}

func (k EventKind) String() string {
	if k >= 0 && int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("event(%d)", int(k))
}

// Event describes what Handle or Expire did.
type Event struct {
	Kind EventKind
	// Binding is the new state (register, refresh, move), the binding removed
	// (deregister, expire), or what is known of the sender (reject).
	Binding  Binding
	PrevDUID []byte // move: the DUID that held the address before
	PrevFQDN string // refresh, move: the FQDN the binding had before (DNS updates follow a rename)
	Relayed  bool
	Reason   string // reject: the Reason name
	Status   uint16 // leasequery: the status code returned
	Time     time.Time
	// DNSSeq, when not 0, numbers the DNS change (DNSChange) the commit
	// wrote for e to the DNS journal in its transaction (Config.DNSJournal).
	DNSSeq int64
}

// Durable reports whether e changes the bindings and must be committed
// before the reply it goes with is sent.
func (e Event) Durable() bool {
	switch e.Kind {
	case EventRegister, EventRefresh, EventMove, EventDeregister, EventExpire:
		return true
	}
	return false
}
