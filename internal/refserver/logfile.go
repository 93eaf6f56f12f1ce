package refserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// The on-disk format is described in the package doc (doc.go).
const (
	logVersion = 1
	headerLen  = 24
	recHdrLen  = 8
	maxRecord  = 16 << 20

	kindSnapshot = 'S'
	kindWAL      = 'W'

	recMeta    = 'M'
	recBinding = 'B'
	recDelete  = 'D'
	recHistory = 'H'
)

var (
	logMagic = [8]byte{'a', 'd', 'd', 'r', 'r', 'e', 'g', 0}
	crcTable = crc32.MakeTable(crc32.Castagnoli)

	errNotLog = errors.New("not an addrreg log file")
	// errTorn marks a record that is cut off or fails its CRC.
	errTorn = errors.New("torn or corrupt record")
)

func appendHeader(dst []byte, kind byte, gen uint64) []byte {
	start := len(dst)
	dst = append(dst, logMagic[:]...)
	dst = append(dst, logVersion, kind, 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, gen)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], crcTable))
}

// parseHeader returns a file's kind and generation.
func parseHeader(b []byte) (kind byte, gen uint64, err error) {
	if len(b) < headerLen || !bytes.Equal(b[:8], logMagic[:]) {
		return 0, 0, errNotLog
	}
	if crc32.Checksum(b[:20], crcTable) != binary.BigEndian.Uint32(b[20:24]) {
		return 0, 0, fmt.Errorf("%w: header CRC mismatch", errNotLog)
	}
	if b[8] != logVersion {
		return 0, 0, fmt.Errorf("log format version %d, this server reads %d", b[8], logVersion)
	}
	return b[9], binary.BigEndian.Uint64(b[12:20]), nil
}

// beginRecord starts a record of type typ at the end of dst; append its
// payload, then call endRecord with the length dst had before.
func beginRecord(dst []byte, typ byte) []byte { return append(dst, 0, 0, 0, 0, 0, 0, 0, 0, typ) }

// endRecord fills in the length and CRC of the record that starts at start.
func endRecord(dst []byte, start int) []byte {
	rec := dst[start+recHdrLen:]
	binary.BigEndian.PutUint32(dst[start:], uint32(len(rec)))
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Checksum(rec, crcTable))
	return dst
}

// parseRecords walks the records in b (a file after its header), calling
// fn with each record's type and payload (valid only during the call). It
// stops at a zero length (the end) and returns the offset where the good
// records end; err is errTorn (wrapped, with the offset) for a record that
// is cut off or fails its CRC, or what fn returned.
func parseRecords(b []byte, fn func(typ byte, p []byte) error) (end int, err error) {
	for off := 0; ; {
		if len(b)-off < recHdrLen {
			if allZero(b[off:]) {
				return off, nil
			}
			return off, fmt.Errorf("%w at %d: %d bytes left for an 8-byte record header", errTorn, off, len(b)-off)
		}
		n := binary.BigEndian.Uint32(b[off:])
		if n == 0 {
			return off, nil
		}
		if n > maxRecord || uint64(n) > uint64(len(b)-off-recHdrLen) {
			return off, fmt.Errorf("%w at %d: length %d, %d bytes left", errTorn, off, n, len(b)-off-recHdrLen)
		}
		rec := b[off+recHdrLen : off+recHdrLen+int(n)]
		if crc32.Checksum(rec, crcTable) != binary.BigEndian.Uint32(b[off+4:]) {
			return off, fmt.Errorf("%w at %d: CRC mismatch", errTorn, off)
		}
		if err := fn(rec[0], rec[1:]); err != nil {
			return off, fmt.Errorf("record at %d: %w", off, err)
		}
		off += recHdrLen + int(n)
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// stBinding is a binding as replayed: its expiry and where its codecV1
// bytes are in the logState's arena.
type stBinding struct {
	exp int64
	rec recRef
}

// recArena holds record bytes in blocks of 1 MiB and hands out their
// positions, not slices: a map of a million replayed bindings then holds
// no pointers, and the garbage collector does not scan it while a
// compaction runs beside the server.
type recArena struct{ blocks [][]byte }

// recRef is where a record's bytes are in a recArena.
type recRef struct{ blk, off, n uint32 }

const arenaBlock = 1 << 20

func (a *recArena) add(p []byte) recRef {
	k := len(a.blocks) - 1
	if k < 0 || len(a.blocks[k])+len(p) > cap(a.blocks[k]) {
		a.blocks = append(a.blocks, make([]byte, 0, max(arenaBlock, len(p))))
		k++
	}
	off := len(a.blocks[k])
	a.blocks[k] = append(a.blocks[k], p...)
	return recRef{blk: uint32(k), off: uint32(off), n: uint32(len(p))}
}

func (a *recArena) get(r recRef) []byte { return a.blocks[r.blk][r.off : r.off+r.n : r.off+r.n] }

// histEntry is one history record in memory: its sequence, time and codecV1 bytes.
type histEntry struct {
	seq uint64
	t   int64
	rec []byte
}

// histRing is the retained history, oldest first.
type histRing struct {
	e    []histEntry
	head int
}

func (r *histRing) len() int { return len(r.e) - r.head }

func (r *histRing) push(h histEntry) { r.e = append(r.e, h) }

// reserve makes room for every record ret keeps (prune compacts the slice
// once half of it is dropped, so twice that) up to a bound, so that the
// ring does not grow by doubling, copying and touching fresh memory while
// the server is under load.
func (r *histRing) reserve(ret retention) {
	n := ret.max
	if n == 0 {
		n = HistoryCap
	}
	n = min(2*n+1024, 1<<20)
	if uint64(cap(r.e)) < n {
		e := make([]histEntry, len(r.e), n)
		copy(e, r.e)
		r.e = e
	}
}

func (r *histRing) all() []histEntry { return r.e[r.head:] }

// prune drops the oldest records beyond ret after a record with seq was
// written at now (Unix ns).
func (r *histRing) prune(ret retention, seq uint64, now int64) {
	maxN := ret.max
	if maxN == 0 {
		maxN = HistoryCap
	}
	for r.head < len(r.e) {
		h := &r.e[r.head]
		old := seq >= maxN && h.seq <= seq-maxN
		if !old && ret.maxAge > 0 && now-h.t > int64(ret.maxAge) {
			old = true
		}
		if !old {
			break
		}
		*h = histEntry{}
		r.head++
	}
	// Reuse the slice's front once half of it is dropped.
	if r.head > 1024 && r.head > len(r.e)/2 {
		n := copy(r.e, r.e[r.head:])
		clear(r.e[n:])
		r.e, r.head = r.e[:n], 0
	}
}

// logState is what replaying records gives: the server DUID, the bindings
// and the retained history.
type logState struct {
	duid     []byte
	seq      uint64 // the last history sequence number
	bindings map[[16]byte]stBinding
	arena    recArena // the bindings' bytes
	hist     histRing
	ret      retention
}

// snapContent is what a snapshot holds: the server DUID, the last history
// sequence number, the bindings (address, expiry, codec bytes valid during
// the call) and the history records.
type snapContent struct {
	duid     []byte
	seq      uint64
	bindings func(yield func(addr [16]byte, exp int64, rec []byte) bool)
	history  []histEntry
}

// content is st as a snapshot's content.
func (st *logState) content() snapContent {
	return snapContent{duid: st.duid, seq: st.seq, history: st.hist.all(),
		bindings: func(yield func([16]byte, int64, []byte) bool) {
			for k, v := range st.bindings {
				if !yield(k, v.exp, st.arena.get(v.rec)) {
					return
				}
			}
		}}
}

func newLogState(ret retention) *logState {
	return &logState{bindings: make(map[[16]byte]stBinding), ret: ret}
}

// apply replays one record. Payloads are copied: p is only valid during
// the call.
func (st *logState) apply(typ byte, p []byte) error {
	switch typ {
	case recMeta:
		if len(p) < 1 || len(p) < 1+int(p[0]) {
			return fmt.Errorf("%w: meta record of %d bytes", errRecord, len(p))
		}
		key, val := string(p[1:1+int(p[0])]), p[1+int(p[0]):]
		switch key {
		case "server-duid":
			st.duid = append([]byte(nil), val...)
		case "seq":
			if len(val) != 8 {
				return fmt.Errorf("%w: seq of %d bytes", errRecord, len(val))
			}
			st.seq = max(st.seq, binary.BigEndian.Uint64(val))
		}
	case recBinding:
		if len(p) < 24 {
			return fmt.Errorf("%w: binding record of %d bytes", errRecord, len(p))
		}
		st.bindings[[16]byte(p[:16])] = stBinding{exp: int64(binary.BigEndian.Uint64(p[16:24])), rec: st.arena.add(p[24:])}
	case recDelete:
		if len(p) != 17 && len(p) != 25 {
			return fmt.Errorf("%w: delete record of %d bytes", errRecord, len(p))
		}
		k := [16]byte(p[:16])
		if p[16] == 1 && len(p) == 25 {
			if cur, ok := st.bindings[k]; ok && cur.exp != int64(binary.BigEndian.Uint64(p[17:25])) {
				return nil // registered again since the expiry was decided
			}
		}
		delete(st.bindings, k)
	case recHistory:
		if len(p) < 16 {
			return fmt.Errorf("%w: history record of %d bytes", errRecord, len(p))
		}
		h := histEntry{seq: binary.BigEndian.Uint64(p), t: int64(binary.BigEndian.Uint64(p[8:16])), rec: bytes.Clone(p[16:])}
		st.seq = max(st.seq, h.seq)
		st.hist.push(h)
		st.hist.prune(st.ret, h.seq, h.t)
	default:
		return fmt.Errorf("%w: record type %#x", errRecord, typ)
	}
	return nil
}

// Record encoders, shared by the writer (store.apply, which encodes the
// body in place) and the snapshot (which copies an encoded body).

func appendMeta(dst []byte, key string, val []byte) []byte {
	start := len(dst)
	dst = append(beginRecord(dst, recMeta), byte(len(key)))
	return endRecord(append(append(dst, key...), val...), start)
}

// beginBindingRec starts a binding record: address and expiry; the body
// (appendBinding) follows, then endRecord.
func beginBindingRec(dst []byte, a16 [16]byte, exp int64) []byte {
	return binary.BigEndian.AppendUint64(append(beginRecord(dst, recBinding), a16[:]...), uint64(exp))
}

// beginHistoryRec starts a history record: sequence number and time; the
// body (appendHistory) follows, then endRecord.
func beginHistoryRec(dst []byte, seq uint64, t int64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(beginRecord(dst, recHistory), seq), uint64(t))
}

func appendBindingRec(dst []byte, a16 [16]byte, exp int64, rec []byte) []byte {
	start := len(dst)
	return endRecord(append(beginBindingRec(dst, a16, exp), rec...), start)
}

func appendHistoryRec(dst []byte, seq uint64, t int64, rec []byte) []byte {
	start := len(dst)
	return endRecord(append(beginHistoryRec(dst, seq, t), rec...), start)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
