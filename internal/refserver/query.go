package refserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/addrreg/addrreg/scheduler"
)

// LeasequeryRetrans is RFC 5007 §4.1.4: LQ_TIMEOUT 1 s, LQ_MAX_RT 10 s, LQ_MAX_RC 5.
var LeasequeryRetrans = scheduler.Retrans{IRT: time.Second, MRT: 10 * time.Second, MRC: 5}

// ErrNoReply is returned by Query when every transmission went unanswered.
var ErrNoReply = errors.New("no LEASEQUERY-REPLY")

// QueryOptions is one leasequery. Exactly one of Address, ClientID and
// ByLink is set.
type QueryOptions struct {
	Server    netip.AddrPort    // default [::1]:547
	Address   netip.Addr        // QUERY_BY_ADDRESS
	ClientID  []byte            // QUERY_BY_CLIENTID
	ByLink    bool              // QUERY_BY_LINK_ADDRESS (RFC 5460): BulkQuery only
	LinkAddr  netip.Addr        // default 0::0: all links
	Requestor []byte            // the requestor's DUID; default a random DUID-UUID
	Retrans   scheduler.Retrans // default LeasequeryRetrans (UDP only)
}

var randRead = rand.Read

// defaults checks q and fills in its defaults.
func (q *QueryOptions) defaults(bulk bool) error {
	n := 0
	for _, set := range []bool{q.Address.IsValid(), len(q.ClientID) > 0, q.ByLink} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errors.New("leasequery: give exactly one of an address, a client ID and a link query")
	}
	if q.ByLink && !bulk {
		return errors.New("leasequery: a query by link-address needs Bulk Leasequery (TCP)")
	}
	if !q.Server.IsValid() {
		q.Server = netip.AddrPortFrom(netip.IPv6Loopback(), 547)
	}
	if q.Requestor == nil {
		d := binary.BigEndian.AppendUint16(nil, 4)
		var u [16]byte
		_, _ = randRead(u[:])
		q.Requestor = append(d, u[:]...)
	}
	if q.Retrans.IRT == 0 {
		q.Retrans = LeasequeryRetrans
	}
	if err := q.Retrans.Validate(); err != nil {
		return fmt.Errorf("leasequery: %w", err)
	}
	return nil
}

// encode builds the LEASEQUERY.
func (q *QueryOptions) encode(xid [3]byte) []byte {
	if q.ByLink {
		return encodeLeasequery(xid, q.Requestor, QueryByLinkAddress, q.LinkAddr, nil)
	}
	return EncodeLeasequery(xid, q.Requestor, q.LinkAddr, q.Address, q.ClientID)
}

// TooLarge reports whether the server answered that the data does not fit
// one UDP message: ask again with BulkQuery.
func (r *LeasequeryReply) TooLarge() bool {
	return r.Status == StatusUnspecFail && strings.HasPrefix(r.Message, TooLargeText)
}

// Query sends a LEASEQUERY and waits for the matching LEASEQUERY-REPLY,
// retransmitting per RFC 8415 §15 with RFC 5007's parameters.
func Query(ctx context.Context, q QueryOptions) (*LeasequeryReply, error) {
	if err := q.defaults(false); err != nil {
		return nil, err
	}
	var xid [3]byte
	_, _ = randRead(xid[:])
	msg := q.encode(xid)

	ua := &net.UDPAddr{IP: q.Server.Addr().AsSlice(), Port: int(q.Server.Port()), Zone: q.Server.Addr().Zone()}
	conn, err := net.DialUDP("udp6", nil, ua)
	if err != nil {
		return nil, fmt.Errorf("leasequery to %s: %w", q.Server, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()

	start := time.Now()
	bo := q.Retrans.Start(mrand.Float64)
	buf := make([]byte, 65536)
	for {
		if _, err := conn.Write(msg); err != nil {
			return nil, fmt.Errorf("send leasequery to %s: %w", q.Server, err)
		}
		wait, more := bo.Next(time.Since(start))
		deadline := time.Now().Add(wait)
		for {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err := conn.SetReadDeadline(deadline); err != nil {
				return nil, fmt.Errorf("leasequery: %w", err)
			}
			n, err := conn.Read(buf)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				// ICMP port unreachable and the like: keep waiting until the deadline.
				if time.Now().Before(deadline) {
					time.Sleep(min(50*time.Millisecond, time.Until(deadline)))
					continue
				}
				break
			}
			r, err := DecodeLeasequeryReply(buf[:n])
			// RFC 5007 §4.2.2: discard without Server ID, with another
			// Client ID, or with another transaction ID.
			if err != nil || r.XID != xid || r.ServerID == nil || !bytes.Equal(r.ClientID, q.Requestor) {
				continue
			}
			return r, nil
		}
		if !more {
			return nil, fmt.Errorf("%w from %s after %d transmissions", ErrNoReply, q.Server, bo.Transmissions())
		}
	}
}

// StatusText names the RFC 5007 / RFC 8415 status codes Query can return.
func StatusText(code uint16) string {
	switch code {
	case StatusSuccess:
		return "Success"
	case 1:
		return "UnspecFail"
	case StatusUnknownQueryType:
		return "UnknownQueryType"
	case StatusMalformedQuery:
		return "MalformedQuery"
	case StatusNotConfigured:
		return "NotConfigured"
	case StatusNotAllowed:
		return "NotAllowed"
	case StatusQueryTerminated:
		return "QueryTerminated"
	}
	return fmt.Sprintf("status %d", code)
}
