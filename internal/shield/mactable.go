package shield

import (
	"sync"
	"time"
)

// macTable maps learned MAC addresses to ports. Every port's receive loop
// learns and looks up; Stats reads its size.
type macTable struct {
	mu  sync.RWMutex
	m   map[[6]byte]macEntry
	age time.Duration
}

type macEntry struct {
	port int
	seen time.Time
}

// maxMACs bounds the table against floods of forged source addresses.
const maxMACs = 8192

func (t *macTable) learn(mac [6]byte, port int, now time.Time) {
	t.mu.RLock()
	e, ok := t.m[mac]
	t.mu.RUnlock()
	// Refresh at most once a second per address to keep the write lock rare.
	if ok && e.port == port && now.Sub(e.seen) < time.Second {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[mac]; !ok && len(t.m) >= maxMACs {
		for k, e := range t.m {
			if now.Sub(e.seen) > t.age {
				delete(t.m, k)
			}
		}
		if len(t.m) >= maxMACs {
			return
		}
	}
	t.m[mac] = macEntry{port, now}
}

func (t *macTable) lookup(mac [6]byte, now time.Time) (int, bool) {
	t.mu.RLock()
	e, ok := t.m[mac]
	t.mu.RUnlock()
	if !ok || now.Sub(e.seen) > t.age {
		return 0, false
	}
	return e.port, true
}

func (t *macTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}
