package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// maxRelayCount bounds --count in relay mode: message i has transaction ID
// i (24 bits), so every outstanding exchange is told apart.
const maxRelayCount = 1 << 24

// relayBatch is how many datagrams one sendmmsg/recvmmsg moves.
const relayBatch = 64

// relayForward appends a Relay-Forward (RFC 8415 §9.2) carrying msg, from a
// relay on link, for the client at peer.
func relayForward(b []byte, link, peer netip.Addr, msg []byte) []byte {
	b = append(b, 12, 0) // RELAY-FORW, hop-count 0
	l, p := link.As16(), peer.As16()
	b = append(b, l[:]...)
	b = append(b, p[:]...)
	b = binary.BigEndian.AppendUint16(b, 9) // OPTION_RELAY_MSG
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// relayReplyXID returns the transaction ID of the ADDR-REG-REPLY inside a
// Relay-Reply (RFC 8415 §9.2), or false for anything else.
func relayReplyXID(b []byte) (uint32, bool) {
	if len(b) < 34 || b[0] != 13 {
		return 0, false
	}
	for o := b[34:]; len(o) >= 4; {
		code, n := binary.BigEndian.Uint16(o), int(binary.BigEndian.Uint16(o[2:]))
		if len(o) < 4+n {
			return 0, false
		}
		if code == 9 {
			m := o[4 : 4+n]
			if len(m) < 4 || m[0] != 37 {
				return 0, false
			}
			return uint32(m[1])<<16 | uint32(m[2])<<8 | uint32(m[3]), true
		}
		o = o[4+n:]
	}
	return 0, false
}

// relayClient returns the address and DUID of the i-th client: a distinct
// one per message. Sequential: interface ID --offset+i, DUID-EN with
// identifier i. Random: the 64-bit interface ID and the DUID-EN's 8-byte
// identifier are two bijections of --offset+i (so still distinct), in no
// order: each lands at a random place in the server's indexes, as SLAAC
// addresses and real clients' DUIDs do.
func relayClient(o options, i int) (netip.Addr, []byte) {
	if o.random {
		j := uint64(o.offset) + uint64(i)
		a := o.prefix.Addr().As16()
		binary.BigEndian.PutUint64(a[8:], mix64(j))
		d := binary.BigEndian.AppendUint16(make([]byte, 0, 14), 2) // DUID-EN, enterprise 32473 (documentation)
		d = binary.BigEndian.AppendUint32(d, 32473)
		return netip.AddrFrom16(a), binary.BigEndian.AppendUint64(d, mix64(j^0x5bd1e9955bd1e995))
	}
	a := o.prefix.Addr().As16()
	id := binary.BigEndian.Uint32(a[12:]) + o.offset + uint32(i)
	binary.BigEndian.PutUint32(a[12:], id)
	d := binary.BigEndian.AppendUint16(make([]byte, 0, 10), 2) // DUID-EN, enterprise 32473 (documentation)
	d = binary.BigEndian.AppendUint32(d, 32473)
	return netip.AddrFrom16(a), binary.BigEndian.AppendUint32(d, uint32(i))
}

// mix64 is SplitMix64's finalizer: a bijection of uint64 whose outputs
// for consecutive inputs look random.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// rxStamp returns the SCM_TIMESTAMPNS in a datagram's control messages
// (Unix ns), or 0.
func rxStamp(oob []byte) int64 {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(data) >= 16 {
			return int64(binary.NativeEndian.Uint64(data))*1e9 + int64(binary.NativeEndian.Uint64(data[8:]))
		}
		oob = rest
	}
	return 0
}

// loadRelay is relay mode: fixed offered rate, one socket, batched sends
// and receives so that the generator costs as little CPU as it can (it
// shares the machine with the server it measures).
func loadRelay(ctx context.Context, o options, stderr io.Writer) (report, error) {
	c, pc, dst, err := openSocket(o, "[::]:547", 16<<20)
	if err != nil {
		return report{}, fmt.Errorf("relay mode: %w", err)
	}
	defer c.Close()
	total := o.count
	if byTime := int(o.rate*o.duration.Seconds()) + 1; total == 0 || byTime < total {
		total = byTime
	}
	total = min(total, maxRelayCount)
	// sentAt[i] is when message i left, in ns since start (+1, so 0 is
	// "not sent"); the reader swaps it to 0 when the reply comes.
	sentAt := make([]atomic.Int64, total)
	// Room for every reply's latency, up front: growing the slice by
	// append copies it and faults in fresh pages, megabytes at a time, on
	// the cores the server under test shares. Both are touched now, not
	// in the first seconds of the measurement.
	lat := make([]time.Duration, total)
	for i := 0; i < total; i += 512 {
		sentAt[i].Store(0)
		lat[i] = 0
	}
	// A reply's latency ends when the kernel received it (SO_TIMESTAMPNS),
	// not when this process got around to reading it: the generator shares
	// the CPUs with the server, and its own scheduling delay is not the
	// server's latency. Without timestamps, at the read.
	stamps := false
	if uc, ok := c.(*net.UDPConn); ok {
		if rc, err := uc.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				stamps = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) == nil
			})
		}
	}
	start := time.Now()
	startNs := start.UnixNano()
	var orphans atomic.Int64

	type result struct {
		lat  []time.Duration
		late int
	}
	readDone := make(chan result, 1)
	go func() {
		r := result{lat: lat[:0]}
		msgs := make([]ipv6.Message, relayBatch)
		for i := range msgs {
			msgs[i].Buffers = [][]byte{make([]byte, 2048)}
			msgs[i].OOB = make([]byte, unix.CmsgSpace(16))
		}
		for {
			for i := range msgs {
				msgs[i].OOB = msgs[i].OOB[:cap(msgs[i].OOB)]
			}
			n, err := pc.ReadBatch(msgs, 0)
			if err != nil {
				readDone <- r
				return
			}
			now := int64(time.Since(start))
			for _, m := range msgs[:n] {
				xid, ok := relayReplyXID(m.Buffers[0][:m.N])
				if !ok || int(xid) >= total {
					orphans.Add(1)
					continue
				}
				t := sentAt[xid].Swap(0)
				if t == 0 {
					orphans.Add(1) // a duplicate, or a reply to nothing sent
					continue
				}
				at := now
				if rx := rxStamp(m.OOB[:m.NN]); stamps && rx != 0 {
					at = rx - startNs
				}
				if d := time.Duration(at - (t - 1)); d <= o.timeout {
					r.lat = append(r.lat, d)
				} else {
					r.late++
				}
			}
		}
	}()

	rep := report{Addrs: total, Target: o.rate}
	sendCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	bufs := make([][]byte, relayBatch)
	msgs := make([]ipv6.Message, relayBatch)
	var informBuf []byte
	sent := 0
	for sent < total && sendCtx.Err() == nil {
		due := min(total, int(time.Since(start).Seconds()*o.rate)+1)
		if due <= sent {
			wait := time.Until(start.Add(time.Duration(float64(sent) / o.rate * float64(time.Second))))
			time.Sleep(max(wait, 50*time.Microsecond))
			continue
		}
		n := min(due-sent, relayBatch)
		for k := range n {
			i := sent + k
			a, duid := relayClient(o, i)
			informBuf = inform(informBuf[:0], uint32(i), duid, a, o.preferred, o.valid)
			bufs[k] = relayForward(bufs[k][:0], o.relay, a, informBuf)
			msgs[k] = ipv6.Message{Buffers: [][]byte{bufs[k]}, Addr: dst}
		}
		now := int64(time.Since(start)) + 1
		for k := range n {
			sentAt[sent+k].Store(now)
		}
		done := 0
		for done < n {
			w, err := pc.WriteBatch(msgs[done:n], 0)
			if err != nil {
				rep.SendErrs++
				if rep.SendErrs == 1 {
					fmt.Fprintf(stderr, "addrreg-loadgen: send to %s: %v\n", dst, err)
				}
				sentAt[sent+done].Store(0)
				w = 1 // skip the datagram that failed
			}
			done += w
		}
		sent += n
	}
	rep.Sent = sent - rep.SendErrs
	// Wait for the last replies, or their timeout.
	deadline := time.Now().Add(o.timeout)
	for time.Now().Before(deadline) {
		left := false
		for i := max(0, sent-relayBatch*64); i < sent; i++ {
			if sentAt[i].Load() != 0 {
				left = true
				break
			}
		}
		if !left {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	end := time.Since(start)
	c.Close()
	r := <-readDone
	rep.Replied = len(r.lat)
	rep.Dropped = rep.Sent - rep.Replied
	rep.Orphans = int(orphans.Load())
	rep.finish(r.lat, end)
	if r.late > 0 {
		fmt.Fprintf(stderr, "addrreg-loadgen: %d replies came after --timeout %v and count as drops\n", r.late, o.timeout)
	}
	return rep, nil
}
