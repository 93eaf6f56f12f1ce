package refserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Records in the database are JSON (what the server wrote before) or, since
// the server writes them itself in the hot path, this compact binary form:
// a version byte, then the fields in order. JSON always starts with '{', so
// the first byte tells them apart and old databases stay readable.
const codecV1 = 1

var errRecord = errors.New("bad record")

// appendBinding encodes b (codecV1).
func appendBinding(dst []byte, b *Binding) []byte {
	dst = append(dst, codecV1)
	dst = appendBytes(dst, b.DUID)
	dst = appendAddr(dst, b.Addr)
	dst = appendBytes(dst, []byte(b.Iface))
	dst = appendAddr(dst, b.LinkAddr)
	dst = appendBytes(dst, b.LinkLayer)
	dst = appendBytes(dst, []byte(b.FQDN))
	dst = appendTime(dst, b.First)
	dst = appendTime(dst, b.Last)
	dst = appendTime(dst, b.Expires)
	dst = binary.AppendVarint(dst, int64(b.Preferred))
	return binary.AppendVarint(dst, int64(b.Valid))
}

func decodeBinding(v []byte) (Binding, error) {
	if len(v) == 0 || v[0] != codecV1 {
		return Binding{}, fmt.Errorf("%w: version %x", errRecord, v[:min(len(v), 1)])
	}
	r := recReader{b: v[1:]}
	b := Binding{
		DUID: r.bytes(), Addr: r.addr(), Iface: string(r.bytes()), LinkAddr: r.addr(),
		LinkLayer: r.bytes(), FQDN: string(r.bytes()), First: r.time(), Last: r.time(), Expires: r.time(),
		Preferred: time.Duration(r.varint()), Valid: time.Duration(r.varint()),
	}
	return b, r.done()
}

// appendHistory encodes h (codecV1).
func appendHistory(dst []byte, h *HistoryRecord) []byte {
	dst = append(dst, codecV1)
	dst = binary.AppendUvarint(dst, h.Seq)
	dst = appendTime(dst, h.Time)
	dst = appendBytes(dst, []byte(h.Event))
	dst = appendBytes(dst, h.DUID)
	dst = appendBytes(dst, h.PrevDUID)
	dst = appendAddr(dst, h.Addr)
	dst = appendBytes(dst, []byte(h.Iface))
	dst = appendAddr(dst, h.LinkAddr)
	dst = appendBytes(dst, h.LinkLayer)
	dst = appendBytes(dst, []byte(h.FQDN))
	dst = binary.AppendVarint(dst, int64(h.Preferred))
	dst = binary.AppendVarint(dst, int64(h.Valid))
	return appendBytes(dst, []byte(h.Reason))
}

func decodeHistory(v []byte) (HistoryRecord, error) {
	if len(v) == 0 || v[0] != codecV1 {
		return HistoryRecord{}, fmt.Errorf("%w: version %x", errRecord, v[:min(len(v), 1)])
	}
	r := recReader{b: v[1:]}
	h := HistoryRecord{Seq: r.uvarint(), Time: r.time(), Event: string(r.bytes()), DUID: r.bytes(), PrevDUID: r.bytes(),
		Addr: r.addr(), Iface: string(r.bytes()), LinkAddr: r.addr(), LinkLayer: r.bytes(), FQDN: string(r.bytes()),
		Preferred: time.Duration(r.varint()), Valid: time.Duration(r.varint()), Reason: string(r.bytes())}
	return h, r.done()
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// appendAddr: 0 for none, else the length (4 or 16) and the address.
func appendAddr(dst []byte, a netip.Addr) []byte {
	switch {
	case a.Is4():
		a4 := a.As4()
		return append(append(dst, 4), a4[:]...)
	case a.Is6():
		a16 := a.As16()
		return append(append(dst, 16), a16[:]...)
	}
	return append(dst, 0)
}

// appendTime: 0 for the zero time, else 1 and Unix nanoseconds.
func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(dst, 0)
	}
	return binary.AppendVarint(append(dst, 1), t.UnixNano())
}

// recReader decodes fields; the first error sticks and done reports it.
type recReader struct {
	b   []byte
	err error
}

func (r *recReader) fail() {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated", errRecord)
	}
	r.b = nil
}

func (r *recReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes returns a copy (nil when empty): the value may alias a file's
// bytes or, in a migration, bbolt's mmap.
func (r *recReader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	if n == 0 {
		return nil
	}
	out := append([]byte(nil), r.b[:n]...)
	r.b = r.b[n:]
	return out
}

func (r *recReader) addr() netip.Addr {
	if len(r.b) == 0 {
		r.fail()
		return netip.Addr{}
	}
	n := int(r.b[0])
	if (n != 0 && n != 4 && n != 16) || len(r.b) < 1+n {
		r.fail()
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(r.b[1 : 1+n])
	r.b = r.b[1+n:]
	return a
}

func (r *recReader) time() time.Time {
	if len(r.b) == 0 {
		r.fail()
		return time.Time{}
	}
	set := r.b[0]
	r.b = r.b[1:]
	if set == 0 {
		return time.Time{}
	}
	return time.Unix(0, r.varint()).UTC()
}

func (r *recReader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", errRecord, len(r.b))
	}
	return r.err
}
