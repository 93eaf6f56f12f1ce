package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/addrreg/addrreg/internal/atomicfile"
	"github.com/addrreg/addrreg/scheduler"
)

// The state file keeps the set of addresses the server may hold from us
// (address, interface, link identity, how long the server may keep each
// binding), so that a
// restart loses nothing: at start, an address in the file that is no longer
// on its interface is deregistered (zero lifetimes, RFC 9686 §4.7, with
// Config.Deregister) once discovery shows the same link supports
// registration; the addresses still there are registered as RFC 9686 §4.4
// says for any start. The same list holds, while the daemon runs, the
// addresses removed while their link was down, and those of a link that
// was removed (a NIC unplugged, an interface deleted: waitForLink): claimed
// the same way when the link, or one under the same name, is back, after
// relinkGrace. An entry whose binding has surely run out on the server
// (its valid lifetime has passed: savedAddr.expired) is dropped, at start
// and while it waits (dropStale): there is nothing left to deregister, so
// a name that never returns, or one now excluded, keeps nothing forever.
// A missing, unreadable or corrupt file is logged and ignored.
//
// It is written atomically (a temporary file in the same directory, fsync,
// rename, fsync of the directory), mode 0600, at most once per
// stateDebounce, so a daemon killed at any moment leaves the old file or
// the new one, never a torn one.

// DefaultStatePath is where addrregd keeps its state file.
const DefaultStatePath = "/var/lib/addrregd/state.json"

const (
	stateVersion  = 1
	stateDebounce = time.Second
	// maxStateSize bounds what is read: a state file of a million
	// addresses is under 200 MB; anything larger is not ours.
	maxStateSize = 256 << 20
)

// savedState is the file's JSON form.
type savedState struct {
	Version   int         `json:"version"`
	Addresses []savedAddr `json:"addresses"`
}

// savedAddr is one address the server may hold.
type savedAddr struct {
	Iface string `json:"iface"`
	// HW is the interface's hardware address when it was registered: with
	// the name, the link's identity. A file from another link (a NIC
	// swapped under the same name) deregisters nothing.
	HW   string     `json:"hwaddr,omitempty"`
	Addr netip.Addr `json:"addr"`
	// Preferred (seconds) is what the last replied-to exchange told the
	// server. Valid (seconds) from At bounds the server's binding: the
	// latest end of the address's valid lifetime while the server may have
	// been told it (bindingLimit). Zero At: no bound known (kept until
	// claimed).
	Preferred uint32    `json:"preferred_lifetime"`
	Valid     uint32    `json:"valid_lifetime"`
	At        time.Time `json:"at,omitzero"`
}

// expires is when the server's binding for sa has surely run out; ok is
// false when that is never (infinite, or no bound known).
func (sa savedAddr) expires() (at time.Time, ok bool) {
	if sa.At.IsZero() || sa.Valid == scheduler.InfiniteSeconds {
		return time.Time{}, false
	}
	return sa.At.Add(time.Duration(sa.Valid) * time.Second), true
}

// expired reports whether the server's binding for sa has surely run out
// by now (its valid lifetime counted from At).
func (sa savedAddr) expired(now time.Time) bool {
	at, ok := sa.expires()
	return ok && !now.Before(at)
}

// parseState parses and checks a state file's contents.
func parseState(b []byte) ([]savedAddr, error) {
	var st savedState
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.DisallowUnknownFields()
	if err := d.Decode(&st); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("parse: trailing data after the JSON object")
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("version %d, want %d", st.Version, stateVersion)
	}
	for i, a := range st.Addresses {
		switch {
		case a.Iface == "" || len(a.Iface) > 15 || strings.ContainsAny(a.Iface, "/ \x00"):
			return nil, fmt.Errorf("address %d: %q is not an interface name", i, a.Iface)
		case len(a.HW) > 64:
			return nil, fmt.Errorf("address %d: hardware address too long", i)
		case !a.Addr.Is6() || a.Addr.Is4In6() || !a.Addr.IsGlobalUnicast() || a.Addr.Zone() != "":
			return nil, fmt.Errorf("address %d: %v is not an IPv6 global unicast address", i, a.Addr)
		}
	}
	return st.Addresses, nil
}

// readState reads and parses the file at path.
func readState(path string) ([]savedAddr, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxStateSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxStateSize)
	}
	addrs, err := parseState(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return addrs, nil
}

// tmpPattern names the temporary files next to path.
func tmpPattern(path string) string { return atomicfile.TempPattern(path) }

// writeState replaces the file at path with addrs, atomically.
func writeState(path string, addrs []savedAddr) (err error) {
	if addrs == nil {
		addrs = []savedAddr{}
	}
	b, err := encodeState(addrs)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := atomicfile.Write(path, b); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}

// encodeState is json.MarshalIndent(savedState{...}, "", "  ") and a
// newline, written out by hand into one buffer: encoding/json would keep
// the buffer of a whole file in its pool (2 MB for 10,000 addresses) and
// spend most of a large write's time in reflection.
// TestEncodeStateIsMarshalIndent holds it to encoding/json's bytes.
func encodeState(addrs []savedAddr) ([]byte, error) {
	b := make([]byte, 0, 64+len(addrs)*240) // about 200 bytes an address
	b = fmt.Appendf(b, "{\n  \"version\": %d,\n  \"addresses\": [", stateVersion)
	for i, sa := range addrs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n    {\n      \"iface\": "...)
		b = appendJSONString(b, sa.Iface)
		if sa.HW != "" {
			b = append(b, ",\n      \"hwaddr\": "...)
			b = appendJSONString(b, sa.HW)
		}
		b = append(b, ",\n      \"addr\": \""...)
		b = append(sa.Addr.AppendTo(b), '"') // hex digits, colons, dots: nothing to escape
		b = append(b, ",\n      \"preferred_lifetime\": "...)
		b = strconv.AppendUint(b, uint64(sa.Preferred), 10)
		b = append(b, ",\n      \"valid_lifetime\": "...)
		b = strconv.AppendUint(b, uint64(sa.Valid), 10)
		if !sa.At.IsZero() {
			b = append(b, ",\n      \"at\": "...)
			if y := sa.At.Year(); y < 0 || y > 9999 {
				return nil, fmt.Errorf("%s: time %v has no RFC 3339 form", sa.Addr, sa.At)
			}
			b = append(b, '"')
			b = append(sa.At.AppendFormat(b, time.RFC3339Nano), '"') // time.Time.MarshalJSON's form
		}
		b = append(b, "\n    }"...)
	}
	if len(addrs) > 0 {
		b = append(b, "\n  "...)
	}
	return append(b, "]\n}\n"...), nil
}

// appendJSONString appends s as encoding/json writes it: as is between
// quotes when every byte is one it never escapes, else by json.Marshal.
func appendJSONString(b []byte, s string) []byte {
	for i := range len(s) {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// loadState reads the file at path and removes temporary files a killed
// writer left behind. It returns the addresses the server may still hold
// (those told a lifetime that has run out by now are dropped) for the
// machine, which claims them link by link (claimStale). A missing or
// unreadable file is logged and means nothing was registered before.
func loadState(path string, now time.Time, log *slog.Logger) []savedAddr {
	if path == "" {
		return nil
	}
	if tmps, err := filepath.Glob(filepath.Join(filepath.Dir(path), tmpPattern(path))); err == nil {
		for _, t := range tmps {
			os.Remove(t)
		}
	}
	addrs, err := readState(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		log.Info("no state file: nothing registered before", "path", path)
		return nil
	case err != nil:
		log.Warn("state file unreadable: ignoring it", "path", path, "err", err)
		return nil
	}
	var live []savedAddr
	for _, sa := range addrs {
		if !sa.expired(now) { // else the server has dropped it already: nothing to deregister
			live = append(live, sa)
		}
	}
	log.Info("state file read", "path", path, "addresses", len(live), "expired", len(addrs)-len(live))
	return live
}

// snapshotSeed seeds hashSnapshot for the process's life.
var snapshotSeed = maphash.MakeSeed()

// hashSnapshot is what saveState keeps of the last snapshot it handed on:
// a hash, not the snapshot (88 bytes an address). It is the sum of its
// entries' hashes, so the order does not count and the machine can sum
// them as it finds them (machine.snapshotHash).
func hashSnapshot(snap []savedAddr) uint64 {
	var h uint64
	for _, sa := range snap {
		h += hashSaved(sa)
	}
	return h
}

// hashSaved is one entry's hash, for hashSnapshot.
func hashSaved(sa savedAddr) uint64 {
	return maphash.Comparable(snapshotSeed, sa)
}

// stateWriter writes the snapshots the loop hands it (effSave) in its own
// goroutine, so a slow disk never holds the owner loop up.
type stateWriter struct {
	path    string
	log     *slog.Logger
	in      chan []savedAddr // one slot: a newer snapshot replaces one not yet written
	failing bool             // the last write failed (logged once until one succeeds)
	// release: give the heap back to the kernel once the snapshot handed
	// before is written (Agent.releaseMemory).
	release  chan struct{}
	released time.Time // the last release
}

func newStateWriter(path string, log *slog.Logger) *stateWriter {
	return &stateWriter{path: path, log: log, in: make(chan []savedAddr, 1), release: make(chan struct{}, 1)}
}

// releaseWriteMin: after writing a state file of this many addresses or
// more, the writer gives the heap back to the kernel (a forced collection,
// a few milliseconds beside the write's own).
const releaseWriteMin = 1000

// releaseWriteEvery bounds how often large writes give the heap back.
const releaseWriteEvery = 10 * time.Second

// releaseAfterWrite asks for the heap to be given back to the kernel once
// the snapshot offered last is written. Only the owner loop calls it.
func (w *stateWriter) releaseAfterWrite() {
	select {
	case w.release <- struct{}{}:
	default:
	}
}

// offer queues snap, replacing one not yet written. Only the owner loop
// calls it.
func (w *stateWriter) offer(snap []savedAddr) {
	select {
	case <-w.in:
	default:
	}
	w.in <- snap
}

// run writes snapshots until ctx ends.
func (w *stateWriter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case snap := <-w.in:
			w.write(snap)
			if len(snap) >= releaseWriteMin && time.Since(w.released) >= releaseWriteEvery {
				// Idle, writes are rare (a bound crossing its grid): the
				// few MB a large one allocated would otherwise stay
				// resident until the next collections and the scavenger.
				// In a burst, once per releaseWriteEvery at most (its
				// end has its own: releaseAfterWrite).
				debug.FreeOSMemory()
				w.released = time.Now()
			}
		case <-w.release:
			select {
			case snap := <-w.in:
				w.write(snap)
			default:
			}
			debug.FreeOSMemory()
			w.released = time.Now()
		}
	}
}

// write replaces the file with snap, logging the first failure and the
// recovery.
func (w *stateWriter) write(snap []savedAddr) {
	err := writeState(w.path, snap)
	switch {
	case err != nil && !w.failing:
		w.failing = true
		w.log.Warn("state file not written", "path", w.path, "err", err)
	case err == nil && w.failing:
		w.failing = false
		w.log.Info("state file written again", "path", w.path)
	}
}
