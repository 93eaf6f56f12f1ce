package refserver

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The database format of releases before the SQL store (issue 19): a
// snapshot file at the database path and write-ahead log segments
// PATH.wal.GENERATION beside it, each a 24-byte header (magic
// "addrreg\x00", version 1, kind 'S' or 'W', generation, CRC-32C) and
// records (length, CRC-32C, type byte, payload): 'M' meta (server DUID),
// 'B' binding, 'D' delete, 'H' history, payloads in the binary codec
// below. This file only reads it, once, to import it (importLegacy in
// storage.go); nothing writes it any more.

var (
	legacyMagic = []byte("addrreg\x00")
	legacyCRC   = crc32.MakeTable(crc32.Castagnoli)
	errRecord   = errors.New("bad record")
)

// legacyDB is what an old database holds.
type legacyDB struct {
	duid     []byte
	bindings map[netip.Addr]Binding
	history  []HistoryRecord
	files    []string // the snapshot and its segments, in replay order
}

// isLegacy reports whether the file at path is an old-format snapshot.
func isLegacy(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, len(legacyMagic))
	n, _ := f.Read(head)
	return n == len(head) && bytes.Equal(head, legacyMagic)
}

// readLegacy replays the snapshot at path and its segments. A torn record
// at the end of the last segment (a commit never acknowledged) ends the
// replay there, as the old server did.
func readLegacy(path string) (*legacyDB, error) {
	db := &legacyDB{bindings: make(map[netip.Addr]Binding)}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read old database %s: %w", path, err)
	}
	kind, snapGen, err := legacyHeader(data)
	if err != nil || kind != 'S' {
		return nil, fmt.Errorf("old database %s: not a snapshot: %v", path, err)
	}
	if _, err := db.records(data[24:]); err != nil {
		return nil, fmt.Errorf("old database %s is corrupt: %w", path, err)
	}
	db.files = append(db.files, path)
	names, _ := filepath.Glob(path + ".wal.*")
	type seg struct {
		name string
		gen  uint64
	}
	var segs []seg
	for _, n := range names {
		if g, err := strconv.ParseUint(strings.TrimPrefix(n, path+".wal."), 10, 64); err == nil {
			segs = append(segs, seg{n, g})
		}
	}
	slices.SortFunc(segs, func(a, b seg) int { return cmp.Compare(a.gen, b.gen) })
	for _, s := range segs {
		db.files = append(db.files, s.name)
		if s.gen <= snapGen {
			continue // already in the snapshot
		}
		data, err := os.ReadFile(s.name)
		if err != nil {
			return nil, fmt.Errorf("read old log segment %s: %w", s.name, err)
		}
		if _, _, err := legacyHeader(data); err != nil {
			continue // made ahead, never written
		}
		if _, err := db.records(data[24:]); err != nil && !errors.Is(err, errTornLegacy) {
			return nil, fmt.Errorf("old log segment %s: %w", s.name, err)
		}
	}
	return db, nil
}

var errTornLegacy = errors.New("torn record")

func legacyHeader(b []byte) (kind byte, gen uint64, err error) {
	if len(b) < 24 || !bytes.Equal(b[:8], legacyMagic) {
		return 0, 0, errors.New("no addrreg header")
	}
	if crc32.Checksum(b[:20], legacyCRC) != binary.BigEndian.Uint32(b[20:24]) || b[8] != 1 {
		return 0, 0, errors.New("bad header")
	}
	return b[9], binary.BigEndian.Uint64(b[12:20]), nil
}

func (db *legacyDB) records(b []byte) (int, error) {
	for off := 0; ; {
		if len(b)-off < 8 {
			return off, nil
		}
		n := binary.BigEndian.Uint32(b[off:])
		if n == 0 {
			return off, nil
		}
		if uint64(n) > uint64(len(b)-off-8) {
			return off, fmt.Errorf("%w at %d", errTornLegacy, off)
		}
		rec := b[off+8 : off+8+int(n)]
		if crc32.Checksum(rec, legacyCRC) != binary.BigEndian.Uint32(b[off+4:]) {
			return off, fmt.Errorf("%w at %d", errTornLegacy, off)
		}
		if err := db.apply(rec[0], rec[1:]); err != nil {
			return off, fmt.Errorf("record at %d: %w", off, err)
		}
		off += 8 + int(n)
	}
}

func (db *legacyDB) apply(typ byte, p []byte) error {
	switch typ {
	case 'M':
		if len(p) < 1 || len(p) < 1+int(p[0]) {
			return errRecord
		}
		if string(p[1:1+int(p[0])]) == "server-duid" {
			db.duid = bytes.Clone(p[1+int(p[0]):])
		}
	case 'B':
		if len(p) < 24 {
			return errRecord
		}
		b, err := decodeBinding(p[24:])
		if err != nil {
			return err
		}
		db.bindings[b.Addr] = b
	case 'D':
		if len(p) != 17 && len(p) != 25 {
			return errRecord
		}
		a := netip.AddrFrom16([16]byte(p[:16]))
		if p[16] == 1 && len(p) == 25 {
			if cur, ok := db.bindings[a]; ok && unixNano(cur.Expires) != int64(binary.BigEndian.Uint64(p[17:25])) {
				return nil // registered again since the expiry was decided
			}
		}
		delete(db.bindings, a)
	case 'H':
		if len(p) < 16 {
			return errRecord
		}
		h, err := decodeHistory(p[16:])
		if err != nil {
			return err
		}
		db.history = append(db.history, h)
	default:
		return fmt.Errorf("%w: type %#x", errRecord, typ)
	}
	return nil
}

func decodeBinding(v []byte) (Binding, error) {
	if len(v) == 0 || v[0] != 1 {
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

func decodeHistory(v []byte) (HistoryRecord, error) {
	if len(v) == 0 || v[0] != 1 {
		return HistoryRecord{}, fmt.Errorf("%w: version %x", errRecord, v[:min(len(v), 1)])
	}
	r := recReader{b: v[1:]}
	h := HistoryRecord{Seq: r.uvarint(), Time: r.time(), Event: string(r.bytes()), DUID: r.bytes(), PrevDUID: r.bytes(),
		Addr: r.addr(), Iface: string(r.bytes()), LinkAddr: r.addr(), LinkLayer: r.bytes(), FQDN: string(r.bytes()),
		Preferred: time.Duration(r.varint()), Valid: time.Duration(r.varint()), Reason: string(r.bytes())}
	return h, r.done()
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

func (r *recReader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	if n == 0 {
		return nil
	}
	out := bytes.Clone(r.b[:n])
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
