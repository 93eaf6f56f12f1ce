package netmon

import "sync/atomic"

type atomic64 struct{ v atomic.Int64 }

func (a *atomic64) load() int64   { return a.v.Load() }
func (a *atomic64) store(v int64) { a.v.Store(v) }
