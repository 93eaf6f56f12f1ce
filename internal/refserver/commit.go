package refserver

import (
	"context"
	"log/slog"
	"net/netip"
	"time"
)

// job is what one message (or one expiry run) gives the writer: events to
// commit, and the reply to send once they are durable.
type job struct {
	ev  Event   // committed unless its Kind is EventNone
	evs []Event // more events to log and count (the expiries a commit made)
	// expire asks the commit to remove the bindings expired by then
	// (the expirer's job).
	expire  time.Time
	reply   []byte // sent after the commit; nil: nothing to send
	to      netip.AddrPort
	zone    string  // for a link-local destination
	ifIndex int     // unrelayed: out the receiving interface (RFC 9686 §4.3)
	log     bool    // log ev after every send of the batch: logging must not delay replies
	buf     *[]byte // the reply's buffer, back to the pool once sent
	done    func()  // called once committed and sent (benchmarks wait on it)
	// rx is when the kernel received the message and read when a reader
	// took it (Unix ns; 0 when unknown): the start of its stages
	// (metrics.go).
	rx, read int64
}

// writer commits whatever is queued in one transaction (group commit: the
// batch is what queued up during the previous commit, not what a timer
// allowed), and hands the batch to the sender, which releases the replies
// that waited for it, writeBatch per sendmmsg, while the writer commits the
// next batch. It returns when jobs is closed and drained and the sender is
// done. After a failed commit it backs off before the next, until ctx ends:
// then what is still queued is tried once each, without waiting, so a
// server told to stop while its database is down stops at once (nothing
// uncommitted is acknowledged either way).
func (s *Server) writer(ctx context.Context) {
	const maxBatch = 4096
	// Three batches: one filling and committing, one being sent, one spare.
	free := make(chan []job, 3)
	for range cap(free) {
		free <- make([]job, 0, maxBatch)
	}
	sendq := make(chan sendBatch, cap(free))
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		s.sender(sendq, free)
	}()
	defer func() {
		close(sendq)
		<-senderDone
	}()
	var evs []Event
	var idx []int // evs[i] is batch[idx[i]].ev
	down := false
	backoff := time.Duration(0)
	for j := range s.jobs {
		batch := append(<-free, j)
	drain:
		for len(batch) < maxBatch {
			select {
			case j, ok := <-s.jobs:
				if !ok {
					break drain
				}
				batch = append(batch, j)
			default:
				break drain
			}
		}
		evs, idx = evs[:0], idx[:0]
		var expireAt time.Time
		for i, j := range batch {
			if j.ev.Kind != EventNone {
				evs = append(evs, j.ev)
				idx = append(idx, i)
			}
			if j.expire.After(expireAt) {
				expireAt = j.expire
			}
		}
		t0 := time.Now()
		expired, err := s.commit(evs, expireAt)
		t1 := time.Now()
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("commit", "jobs", len(batch), "events", len(evs), "took", t1.Sub(t0))
		}
		if err != nil {
			// Nothing is acknowledged that is not committed: the
			// batch's replies are dropped (its clients retransmit),
			// and the writer waits before trying the next batch, while
			// the readers shed what the queue cannot hold.
			s.count(ErrDatabase.Name)
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			if !down {
				s.log.Error("database commit failed: not acknowledging until it works again", "db", RedactDB(s.cfg.DBPath),
					"events", len(evs), "reason", ErrDatabase.Name, "err", err)
			} else {
				s.log.Debug("database commit failed again", "events", len(evs), "retry_in", backoff, "err", err)
			}
			down = true
			s.dbDown.Store(true)
		} else {
			for k, i := range idx {
				batch[i].ev = evs[k]
				if evs[k].Kind == EventReject {
					batch[i].reply = nil // over the limit: the database said no
				}
			}
			// Expiries first: one found by a registration of its
			// address (commitTx) happened before it.
			s.committed(expired)
			s.committed(evs)
			if len(expired) > 0 {
				batch = append(batch, job{evs: expired})
				s.queued.Add(1) // released with the batch
			}
			if down {
				s.log.Info("database commits work again: acknowledging", "db", RedactDB(s.cfg.DBPath))
				down, backoff = false, 0
				s.dbDown.Store(false)
				s.poke() // an expiry run may have failed meanwhile
			}
			if !expireAt.IsZero() {
				s.armFromDB()
			}
		}
		clear(evs)
		sendq <- sendBatch{jobs: batch, failed: err != nil, start: t0.UnixNano(), end: t1.UnixNano()}
		if err != nil {
			wait := time.NewTimer(backoff)
			select {
			case <-wait.C:
			case <-ctx.Done():
				wait.Stop()
			}
		}
	}
}

// committed hands committed events to Config.OnCommit (the DNS updater).
func (s *Server) committed(evs []Event) {
	if s.cfg.OnCommit != nil && len(evs) > 0 {
		s.cfg.OnCommit(evs)
	}
}

// sendBatch is a committed batch (or, failed, one that is not) for the sender.
type sendBatch struct {
	jobs   []job
	failed bool
	// start and end are when its commit started and ended (Unix ns).
	start, end int64
}

// commitTimeout bounds one commit: a database that hangs counts as down.
const commitTimeout = 10 * time.Second

// commit applies evs (and the expiry run asked for) in one transaction.
func (s *Server) commit(evs []Event, expireAt time.Time) ([]Event, error) {
	defer s.metrics.observeCommit(time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	return s.store().commit(ctx, evs, expireAt, s.maxPerDUID())
}

// countEvent counts a committed event.
func (s *Server) countEvent(e Event) {
	if e.Kind == EventReject {
		s.count("reject", e.Reason)
		return
	}
	s.count(e.Kind.String())
}
