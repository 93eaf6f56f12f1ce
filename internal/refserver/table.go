package refserver

import (
	"bytes"
	"hash/maphash"
	"net"
	"net/netip"
	"time"
)

// table holds the bindings in memory without pointers: fixed-size records
// in fixed-size chunks, found through maps whose keys and values are plain
// integers and arrays. The garbage collector never scans it (a map or slice
// without pointers is not scanned), so a collection costs the same with a
// million bindings as with none; with a *Binding per address, a DUID string
// per client and a set per DUID, a mark phase at 100,000 bindings took
// 100-150 ms of a two-core machine and held up the replies of every
// registration that arrived meanwhile. And nothing is copied as it grows.
//
// A binding is a slot; a client (DUID) is a duidRec, linking its slots in
// a list. The few variable-length parts that do not fit inline (an FQDN, a
// link-layer address over 16 bytes, a DUID over duidInline bytes) live in
// small maps beside, which only bindings that have them touch.
//
// A table is not safe for concurrent use: the Handler's mutex guards it.
type table struct {
	slots  chunked[slot]
	duids  chunked[duidRec]
	free   []uint32 // free slots (refs)
	freeD  []uint32 // free duidRecs (refs)
	byAddr map[[16]byte]uint32
	// byDUID maps a DUID's hash to the first duidRec with that hash; the
	// others follow through duidRec.next. The seed is random per table,
	// so nobody can choose DUIDs that collide.
	byDUID map[uint64]uint32
	seed   maphash.Seed
	hash   func(seed maphash.Seed, b []byte) uint64 // maphash.Bytes; tests make it collide
	n      int

	ext      map[uint32]slotExt // by slot ref
	longDUID map[uint32][]byte  // by duidRec ref
	names    []string           // interface names, by slot.iface
	nameIdx  map[string]uint32
}

// A ref is a slot's or duidRec's index plus one: 0 is none.

// slot is one binding (Binding's fields, times as Unix ns).
type slot struct {
	addr      [16]byte
	linkAddr  [16]byte
	first     int64
	last      int64
	expires   int64 // 0: never
	preferred int64
	valid     int64
	duid      uint32 // ref
	next      uint32 // the DUID's next slot (ref)
	prev      uint32 // the DUID's previous slot (ref)
	iface     uint32 // index in names
	ll        [16]byte
	llLen     uint8
	flags     uint8
}

const (
	slotUsed     = 1 << iota
	slotLinkAddr // linkAddr is valid
	slotHasExt   // ext holds an FQDN or a long link-layer address
)

// slotExt is what does not fit in a slot.
type slotExt struct {
	fqdn string
	ll   net.HardwareAddr
}

// duidInline is how many bytes of a DUID a duidRec holds: DUID-LL (10),
// DUID-LLT (14) and DUID-UUID (18) fit (RFC 8415 §11, RFC 6355).
const duidInline = 22

type duidRec struct {
	inl   [duidInline]byte
	n     uint8 // DUID length (up to 130, RFC 8415 §11.1); 0: free
	head  uint32
	count uint32
	next  uint32 // next duidRec with the same hash
	hash  uint64
}

func newTable() *table {
	return &table{
		byAddr: make(map[[16]byte]uint32), byDUID: make(map[uint64]uint32), seed: maphash.MakeSeed(), hash: maphash.Bytes,
		ext: make(map[uint32]slotExt), longDUID: make(map[uint32][]byte), nameIdx: make(map[string]uint32),
	}
}

func (t *table) len() int { return t.n }

// lookup returns the slot of address a, or 0.
func (t *table) lookup(a netip.Addr) uint32 { return t.byAddr[a.As16()] }

func (t *table) slot(r uint32) *slot { return t.slots.at(int(r - 1)) }

func (t *table) addr(r uint32) netip.Addr { return netip.AddrFrom16(t.slot(r).addr) }

func (t *table) linkAddr(r uint32) netip.Addr {
	s := t.slot(r)
	if s.flags&slotLinkAddr == 0 {
		return netip.Addr{}
	}
	return netip.AddrFrom16(s.linkAddr)
}

// expires is the slot's expiry, Unix ns (0: never).
func (t *table) expires(r uint32) int64 { return t.slot(r).expires }

// duidBytes returns the DUID's bytes; inline ones alias the table, so the
// caller copies what it keeps.
func (t *table) duidBytes(d uint32) []byte {
	rec := t.duids.at(int(d - 1))
	if int(rec.n) <= duidInline {
		return rec.inl[:rec.n]
	}
	return t.longDUID[d]
}

// sameDUID reports whether slot r belongs to duid.
func (t *table) sameDUID(r uint32, duid []byte) bool {
	return bytes.Equal(t.duidBytes(t.slot(r).duid), duid)
}

// get returns slot r as a Binding of its own (nothing shared with the table).
func (t *table) get(r uint32) Binding {
	b := t.view(r)
	b.DUID, b.LinkLayer = bytes.Clone(b.DUID), bytes.Clone(b.LinkLayer)
	return b
}

// view returns slot r as a Binding whose DUID and link-layer address alias
// the table: valid until the table changes.
func (t *table) view(r uint32) Binding {
	s := t.slot(r)
	b := Binding{
		DUID: t.duidBytes(s.duid), Addr: netip.AddrFrom16(s.addr), Iface: t.names[s.iface],
		First: fromUnixNano(s.first), Last: fromUnixNano(s.last), Expires: fromUnixNano(s.expires),
		Preferred: time.Duration(s.preferred), Valid: time.Duration(s.valid),
	}
	if s.flags&slotLinkAddr != 0 {
		b.LinkAddr = netip.AddrFrom16(s.linkAddr)
	}
	if s.llLen > 0 {
		b.LinkLayer = s.ll[:s.llLen]
	}
	if s.flags&slotHasExt != 0 {
		e := t.ext[r]
		b.FQDN = e.fqdn
		if e.ll != nil {
			b.LinkLayer = e.ll
		}
	}
	return b
}

func fromUnixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// findDUID returns duid's record, or 0.
func (t *table) findDUID(duid []byte) uint32 {
	h := t.hash(t.seed, duid)
	for d := t.byDUID[h]; d != 0; d = t.duids.at(int(d - 1)).next {
		if rec := t.duids.at(int(d - 1)); rec.hash == h && bytes.Equal(t.duidBytes(d), duid) {
			return d
		}
	}
	return 0
}

// count returns how many bindings duid holds.
func (t *table) count(duid []byte) int {
	if d := t.findDUID(duid); d != 0 {
		return int(t.duids.at(int(d - 1)).count)
	}
	return 0
}

// ofDUID iterates over duid's slots (in no particular order). The yield
// function must not change the table.
func (t *table) ofDUID(duid []byte) func(yield func(uint32) bool) {
	return func(yield func(uint32) bool) {
		d := t.findDUID(duid)
		if d == 0 {
			return
		}
		for r := t.duids.at(int(d - 1)).head; r != 0; r = t.slot(r).next {
			if !yield(r) {
				return
			}
		}
	}
}

// all iterates over every slot in use. The yield function must not change
// the table.
func (t *table) all(yield func(uint32) bool) {
	for i := range t.slots.n {
		if t.slots.at(i).flags&slotUsed != 0 && !yield(uint32(i+1)) {
			return
		}
	}
}

// insert adds b, whose address the table must not hold, and returns its slot.
func (t *table) insert(b *Binding) uint32 {
	r := t.slots.take(&t.free)
	s := t.slot(r)
	*s = slot{addr: b.Addr.As16(), flags: slotUsed}
	t.fill(r, s, b)
	d := t.addDUID(b.DUID)
	rec := t.duids.at(int(d - 1))
	s.duid, s.next = d, rec.head
	if rec.head != 0 {
		t.slot(rec.head).prev = r
	}
	rec.head = r
	rec.count++
	t.byAddr[s.addr] = r
	t.n++
	return r
}

// set overwrites slot r with b, which has the same address and DUID.
func (t *table) set(r uint32, b *Binding) {
	s := t.slot(r)
	s.flags &^= slotLinkAddr
	t.fill(r, s, b)
}

// fill sets slot r's fields but the address and the DUID links.
func (t *table) fill(r uint32, s *slot, b *Binding) {
	s.first, s.last, s.expires = unixNano(b.First), unixNano(b.Last), unixNano(b.Expires)
	s.preferred, s.valid = int64(b.Preferred), int64(b.Valid)
	s.iface = t.name(b.Iface)
	if b.LinkAddr.IsValid() {
		s.linkAddr, s.flags = b.LinkAddr.As16(), s.flags|slotLinkAddr
	}
	s.llLen = 0
	var e slotExt
	if len(b.LinkLayer) <= len(s.ll) {
		s.llLen = uint8(copy(s.ll[:], b.LinkLayer))
	} else {
		e.ll = bytes.Clone(b.LinkLayer)
	}
	e.fqdn = b.FQDN
	if e.fqdn != "" || e.ll != nil {
		t.ext[r], s.flags = e, s.flags|slotHasExt
	} else if s.flags&slotHasExt != 0 {
		delete(t.ext, r)
		s.flags &^= slotHasExt
	}
}

func (t *table) name(n string) uint32 {
	if i, ok := t.nameIdx[n]; ok {
		return i
	}
	i := uint32(len(t.names))
	t.names = append(t.names, n)
	t.nameIdx[n] = i
	return i
}

// addDUID returns duid's record, made if new.
func (t *table) addDUID(duid []byte) uint32 {
	if d := t.findDUID(duid); d != 0 {
		return d
	}
	d := t.duids.take(&t.freeD)
	h := t.hash(t.seed, duid)
	rec := t.duids.at(int(d - 1))
	*rec = duidRec{n: uint8(len(duid)), hash: h, next: t.byDUID[h]}
	if len(duid) <= duidInline {
		copy(rec.inl[:], duid)
	} else {
		t.longDUID[d] = bytes.Clone(duid)
	}
	t.byDUID[h] = d
	return d
}

// remove deletes slot r.
func (t *table) remove(r uint32) {
	s := t.slot(r)
	d := s.duid
	rec := t.duids.at(int(d - 1))
	if s.prev != 0 {
		t.slot(s.prev).next = s.next
	} else {
		rec.head = s.next
	}
	if s.next != 0 {
		t.slot(s.next).prev = s.prev
	}
	if rec.count--; rec.count == 0 {
		t.dropDUID(d)
	}
	delete(t.byAddr, s.addr)
	if s.flags&slotHasExt != 0 {
		delete(t.ext, r)
	}
	*s = slot{}
	t.free = append(t.free, r)
	t.n--
}

// dropDUID unlinks and frees a DUID record that holds nothing.
func (t *table) dropDUID(d uint32) {
	rec := t.duids.at(int(d - 1))
	if first := t.byDUID[rec.hash]; first == d {
		if rec.next != 0 {
			t.byDUID[rec.hash] = rec.next
		} else {
			delete(t.byDUID, rec.hash)
		}
	} else {
		for p := first; p != 0; {
			pr := t.duids.at(int(p - 1))
			if pr.next == d {
				pr.next = rec.next
				break
			}
			p = pr.next
		}
	}
	delete(t.longDUID, d)
	*rec = duidRec{}
	t.freeD = append(t.freeD, d)
}

// chunked is a slice of T in fixed-size chunks: growing never moves what
// is stored, so it never copies it nor faults in a second copy's pages.
type chunked[T any] struct {
	chunks [][]T
	n      int
}

// chunkLen is the number of elements per chunk.
const chunkLen = 4096

func (c *chunked[T]) at(i int) *T { return &c.chunks[i/chunkLen][i%chunkLen] }

// grow adds one element at the end (zero unless truncate left it).
func (c *chunked[T]) grow() {
	if c.n == len(c.chunks)*chunkLen {
		c.chunks = append(c.chunks, make([]T, chunkLen))
	}
	c.n++
}

// take returns the ref (index + 1) of a free element: the last one freed,
// else a new one at the end.
func (c *chunked[T]) take(free *[]uint32) uint32 {
	if n := len(*free); n > 0 {
		r := (*free)[n-1]
		*free = (*free)[:n-1]
		return r
	}
	c.grow()
	return uint32(c.n)
}

// truncate keeps the first n elements, and frees the chunks beyond them
// but one spare, so that a length going up and down across a chunk
// boundary does not allocate each time.
func (c *chunked[T]) truncate(n int) {
	c.n = n
	if keep := n/chunkLen + 2; len(c.chunks) > keep {
		clear(c.chunks[keep:])
		c.chunks = c.chunks[:keep]
	}
}

// unixNano is t in Unix nanoseconds, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
