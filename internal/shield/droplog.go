package shield

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"
)

// logDrop writes the security log line for a dropped frame: an alert for a
// DHCPv6-server message (RFC 7610 §5 rule 4), a fault for a packet that could
// not be parsed (rules 2 and 3).
func (s *Switch) logDrop(p *port, r Reason, frame []byte, suppressed uint64) {
	kind := "security fault"
	if r.Alert() {
		kind = "security alert"
	}
	attrs := []any{"iface", p.Name, "reason", r.String(), "src_mac", net.HardwareAddr(frame[6:12]).String()}
	if src, dst, ok := ipv6Addrs(frame); ok {
		attrs = append(attrs, "src", src.String(), "dst", dst.String())
	}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	s.log.Warn("dhcpv6-shield drop: "+kind, attrs...)
}

// ipv6Addrs returns the addresses of the IPv6 header in frame, if there is one.
func ipv6Addrs(frame []byte) (src, dst netip.Addr, ok bool) {
	off := 12
	for len(frame) >= off+2 {
		switch binary.BigEndian.Uint16(frame[off:]) {
		case etherType8021Q, etherType8021AD, etherTypeQinQ, etherTypeQinQ2:
			off += 4
			continue
		case etherTypeIPv6:
			if len(frame) < off+2+40 {
				return src, dst, false
			}
			ip := frame[off+2:]
			return netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40])), true
		}
		break
	}
	return src, dst, false
}

// limiter is a token bucket for log lines, owned by one port's goroutine.
type limiter struct {
	tokens, burst, rate float64
	last                time.Time
	suppressed          uint64
}

func newLimiter(burst int, rate float64) *limiter {
	return &limiter{tokens: float64(burst), burst: float64(burst), rate: rate}
}

func (l *limiter) allow(now time.Time) bool {
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		return true
	}
	l.suppressed++
	return false
}

// takeSuppressed returns how many lines were suppressed since the last line.
func (l *limiter) takeSuppressed() uint64 {
	n := l.suppressed
	l.suppressed = 0
	return n
}
