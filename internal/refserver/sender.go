package refserver

import (
	"net"

	"golang.org/x/net/ipv6"
)

// sender sends the replies of committed batches, counts and logs their
// events, releases their jobs and gives the batch back to the writer.
func (s *Server) sender(sendq <-chan sendBatch, free chan<- []job) {
	w := newReplyWriter()
	for b := range sendq {
		if !b.failed {
			// Counted before the replies leave: whoever got one sees
			// its event in Counters (and the metrics).
			for _, j := range b.jobs {
				if j.log {
					s.countEvent(j.ev)
				}
				for _, e := range j.evs {
					s.countEvent(e)
				}
			}
			for _, j := range b.jobs {
				if j.reply != nil {
					w.add(s, j)
				}
			}
			w.flush(s)
			s.metrics.observeStages(b)
			for _, j := range b.jobs {
				if j.log {
					if j.ev.Kind == EventReject {
						s.logReject(j.ev, ErrTooManyBindings)
					} else {
						s.logEvent(j.ev)
					}
				}
				for _, e := range j.evs {
					s.logEvent(e)
				}
			}
		}
		s.release(b.jobs)
		free <- b.jobs[:0]
	}
}

// release returns the batch's reply buffers and queue places.
func (s *Server) release(batch []job) {
	for i, j := range batch {
		if j.done != nil {
			j.done()
		}
		if j.buf != nil && j.reply != nil {
			*j.buf = j.reply[:0] // the reply may have outgrown the buffer
		}
		if j.buf != nil {
			s.bufs.Put(j.buf)
		}
		batch[i] = job{}
	}
	s.queued.Add(-int64(len(batch)))
}

// replyWriter sends replies writeBatch at a time through sendmmsg, reusing
// its message headers and addresses.
type replyWriter struct {
	msgs  []ipv6.Message
	jobs  []job
	addrs [writeBatch]net.UDPAddr
	ips   [writeBatch][16]byte
	bufs  [writeBatch][1][]byte
}

func newReplyWriter() *replyWriter {
	return &replyWriter{msgs: make([]ipv6.Message, 0, writeBatch), jobs: make([]job, 0, writeBatch)}
}

func (w *replyWriter) add(s *Server, j job) {
	k := len(w.msgs)
	w.ips[k] = j.to.Addr().As16()
	w.addrs[k] = net.UDPAddr{IP: w.ips[k][:], Port: int(j.to.Port()), Zone: j.zone}
	w.bufs[k][0] = j.reply
	m := ipv6.Message{Buffers: w.bufs[k][:], Addr: &w.addrs[k]}
	if j.ifIndex != 0 {
		m.OOB = (&ipv6.ControlMessage{IfIndex: j.ifIndex}).Marshal()
	}
	w.msgs = append(w.msgs, m)
	w.jobs = append(w.jobs, j)
	if len(w.msgs) == writeBatch {
		w.flush(s)
	}
}

func (w *replyWriter) flush(s *Server) {
	for sent := 0; sent < len(w.msgs); {
		n, err := s.pc.WriteBatch(w.msgs[sent:], 0)
		if err != nil || n == 0 {
			// The first datagram of the rest failed: report it, go on.
			s.sendFailed(w.jobs[sent], err)
			n = 1
		} else {
			s.countN("sent", n)
		}
		sent += n
	}
	clear(w.jobs)
	clear(w.bufs[:])
	w.msgs, w.jobs = w.msgs[:0], w.jobs[:0]
}

// sendNow sends a reply that waits for no commit.
func (s *Server) sendNow(j job) {
	var cm *ipv6.ControlMessage
	if j.ifIndex != 0 {
		cm = &ipv6.ControlMessage{IfIndex: j.ifIndex}
	}
	ua := &net.UDPAddr{IP: j.to.Addr().AsSlice(), Port: int(j.to.Port()), Zone: j.zone}
	if _, err := s.pc.WriteTo(j.reply, cm, ua); err != nil {
		s.sendFailed(j, err)
		return
	}
	s.count("sent")
}

func (s *Server) sendFailed(j job, err error) {
	s.count(ErrSend.Name)
	s.log.Warn("send failed", "iface", j.ev.Binding.Iface, "addr", j.ev.Binding.Addr, "dst", j.to, "reason", ErrSend.Name, "err", err)
}
