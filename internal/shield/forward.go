package shield

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// frameConn is one port's link to the wire, as the receive loop and the
// forwarding decision see it: packetConn (packetconn.go) on a real port, a
// fake in the tests, which so run without root. ReadFrame and Wait are
// called only by the port's own receive loop; WriteFrame by any port's.
type frameConn interface {
	// ReadFrame returns the next received frame preceded by its virtio-net
	// header (vnetLen octets), or nil for a frame to ignore (one the switch
	// sent itself). It does not block: with nothing to read it returns
	// unix.EAGAIN. The result is valid until the next call.
	ReadFrame() ([]byte, error)
	// Wait returns when a frame may be ready to read or after timeout.
	Wait(timeout time.Duration) error
	// WriteFrame sends a virtio-net header and frame.
	WriteFrame(out []byte) error
	Close() error
}

// readOutcome is what the receive loop does after ReadFrame.
type readOutcome uint8

const (
	readOK   readOutcome = iota
	readIdle             // nothing to read: wait
	readBad              // this frame is lost: count a receive error, go on
	readFatal
)

// classifyReadErr sorts the errors of ReadFrame.
func classifyReadErr(err error) readOutcome {
	switch {
	case err == nil:
		return readOK
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
		return readIdle
	case errors.Is(err, errOversize), errors.Is(err, unix.ENETDOWN), errors.Is(err, unix.ENOBUFS),
		errors.Is(err, unix.EINVAL): // a GSO type the virtio-net header cannot express
		return readBad
	}
	return readFatal
}

// serve is the receive loop of one port: it classifies each frame, counts
// it, logs drops and forwards what passes.
func (s *Switch) serve(ctx context.Context, p *port) error {
	lim := newLimiter(s.cfg.LogBurst, s.cfg.LogRate)
	for {
		out, err := p.conn.ReadFrame()
		switch classifyReadErr(err) {
		case readOK:
		case readIdle:
			if err := ctx.Err(); err != nil {
				return err
			}
			// Wake at least every 200 ms to notice the end of ctx.
			if err := p.conn.Wait(200 * time.Millisecond); err != nil && !errors.Is(err, unix.EINTR) {
				return fmt.Errorf("port %s: poll: %w", p.Name, err)
			}
			continue
		case readBad:
			p.c.rxErrors.Add(1)
			continue
		default:
			return fmt.Errorf("port %s: receive: %w", p.Name, err)
		}
		if out == nil {
			continue
		}
		s.handle(p, lim, out)
	}
}

// handle decides the fate of one frame received on p (out is its virtio-net
// header and the frame): it classifies and counts it, logs a drop (as lim
// allows) and forwards a frame that passes.
func (s *Switch) handle(p *port, lim *limiter, out []byte) {
	frame := out[vnetLen:]
	p.c.rxFrames.Add(1)
	p.c.rxBytes.Add(uint64(len(frame)))
	v := Classify(s.cfg.Shield, frame, p.Trusted)
	p.c.byReason[v.Reason].Add(1)
	if v.Reason.Alert() {
		p.c.serverMessages.Add(1)
	}
	if v.Action == Drop {
		p.c.dropped.Add(1)
		p.c.drops[v.Reason].Add(1)
		if lim.allow(s.now()) {
			s.logDrop(p, v.Reason, frame, lim.takeSuppressed())
		} else {
			p.c.logSuppressed.Add(1)
		}
		return
	}
	p.c.passed.Add(1)
	s.forward(p, out)
}

// forward sends out (virtio-net header and frame) to the port that knows
// the destination, or floods it.
func (s *Switch) forward(in *port, out []byte) {
	frame := out[vnetLen:]
	if len(frame) < 14 {
		return
	}
	var dst, src [6]byte
	copy(dst[:], frame[0:6])
	copy(src[:], frame[6:12])
	now := s.now()
	if src[0]&1 == 0 {
		s.macs.learn(src, in.idx, now)
	}
	if dst[0]&1 == 0 {
		if port, ok := s.macs.lookup(dst, now); ok {
			if port != in.idx {
				s.send(s.ports[port], out)
			}
			return
		}
	}
	for _, p := range s.ports { // multicast, broadcast, unknown unicast
		if p != in {
			s.send(p, out)
		}
	}
}

func (s *Switch) send(p *port, out []byte) {
	err := p.conn.WriteFrame(out)
	switch {
	case err == nil:
		p.c.txFrames.Add(1)
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOBUFS):
		p.c.txBusy.Add(1) // congestion: drop, as a switch does
	default:
		p.c.txErrors.Add(1)
	}
}
