package refserver

import (
	"context"
	"time"
)

// ExpiryPoll is how often the server looks for expired bindings even when
// it registered none that expire sooner: with a shared database, another
// server's bindings (and those of a server that stopped) expire too.
var ExpiryPoll = 10 * time.Second

// expirer asks the writer for an expiry run when the timer says so.
func (s *Server) expirer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		now := s.clock.Now()
		s.h.Load().Expire(now) // the table's copy; the database's run is the truth
		s.enqueue(job{expire: now})
		s.tmu.Lock()
		s.armedAt = time.Time{}
		s.tmu.Unlock()
		s.arm()
		s.armAt(now.Add(ExpiryPoll))
	}
}

// poke wakes the expirer now.
func (s *Server) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// armFromDB sets the timer to the database's earliest expiry.
func (s *Server) armFromDB() {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	if at, ok, err := s.store().nextExpiry(ctx); err == nil && ok {
		s.armAt(at)
	}
}

// arm sets the one expiry timer to the earliest expiry the table knows.
func (s *Server) arm() {
	if at, ok := s.h.Load().NextExpiry(); ok {
		s.armAt(at)
	}
}

// armAt sets the timer to at unless it is set earlier.
func (s *Server) armAt(at time.Time) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if !s.armedAt.IsZero() && !at.Before(s.armedAt) {
		return
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	s.armedAt = at
	s.timer = s.clock.AfterFunc(at.Sub(s.clock.Now()), s.poke)
}
