package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/addrreg/addrreg/scheduler"
)

// The state file keeps the set of addresses the server may hold from us
// (address, interface, link identity, the lifetimes last told), so that a
// restart loses nothing: at start, an address in the file that is no longer
// on its interface is deregistered (zero lifetimes, RFC 9686 §4.7, with
// Config.Deregister) once discovery shows the same link supports
// registration; the addresses still there are registered as RFC 9686 §4.4
// says for any start. A missing, unreadable or corrupt file is logged and
// ignored.
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
	// Preferred and Valid (seconds) are what the last replied-to exchange
	// told the server, at At; zero when none was confirmed.
	Preferred uint32    `json:"preferred_lifetime"`
	Valid     uint32    `json:"valid_lifetime"`
	At        time.Time `json:"at,omitzero"`
}

// expired reports whether the server's binding for sa has surely run out
// by now (its valid lifetime counted from when it was told).
func (sa savedAddr) expired(now time.Time) bool {
	if sa.At.IsZero() || sa.Valid == scheduler.InfiniteSeconds {
		return false
	}
	return now.Sub(sa.At) > time.Duration(sa.Valid)*time.Second
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
func tmpPattern(path string) string { return "." + filepath.Base(path) + ".tmp*" }

// writeState replaces the file at path with addrs, atomically.
func writeState(path string, addrs []savedAddr) (err error) {
	if addrs == nil {
		addrs = []savedAddr{}
	}
	b, err := json.MarshalIndent(savedState{Version: stateVersion, Addresses: addrs}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	b = append(b, '\n')
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	f, err := os.CreateTemp(dir, tmpPattern(path)) // mode 0600
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", f.Name(), path, err)
	}
	// The rename is durable once the directory is.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// stateFile is the agent's side of the file: owned by Run's goroutine but
// for the writer, which gets snapshots over out.
type stateFile struct {
	path  string
	log   *slog.Logger
	tick  chan struct{} // the debounce timer fired; nil (never ready) without a path
	armed bool
	timer scheduler.Timer // the debounce timer, stopped with the agent
	last  []savedAddr     // the last snapshot handed to the writer
	out   chan []savedAddr
	// stale: addresses from the file at start, by interface name, until
	// discovery on that interface claims them (claimStale).
	stale map[string][]savedAddr
	// forgotten: deregistered while stopping; left out of the last write.
	forgotten map[key]bool
	failing   bool // the last write failed (logged once until one succeeds)
}

func newStateFile(path string, log *slog.Logger) stateFile {
	s := stateFile{path: path, log: log, stale: map[string][]savedAddr{}, forgotten: map[key]bool{}}
	if path != "" {
		s.tick = make(chan struct{}, 1)
		s.out = make(chan []savedAddr, 1)
	}
	return s
}

func (s *stateFile) forget(k key) { s.forgotten[k] = true }

// loadState reads the file into a.state.stale and removes temporary files
// a killed writer left behind.
func (a *Agent) loadState() {
	s := &a.state
	if s.path == "" {
		return
	}
	if tmps, err := filepath.Glob(filepath.Join(filepath.Dir(s.path), tmpPattern(s.path))); err == nil {
		for _, t := range tmps {
			os.Remove(t)
		}
	}
	addrs, err := readState(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		a.log.Info("no state file: nothing registered before", "path", s.path)
		return
	case err != nil:
		a.log.Warn("state file unreadable: ignoring it", "path", s.path, "err", err)
		return
	}
	now, expired := a.clock.Now(), 0
	for _, sa := range addrs {
		if sa.expired(now) {
			expired++ // the server has dropped it already: nothing to deregister
			continue
		}
		s.stale[sa.Iface] = append(s.stale[sa.Iface], sa)
	}
	a.log.Info("state file read", "path", s.path, "addresses", len(addrs)-expired, "expired", expired)
}

// claimStale handles the file's addresses on ifc once discovery shows its
// link supports registration: those no longer on the interface are owed a
// deregistration; those still there are registered like any other.
func (a *Agent) claimStale(ifc *iface) {
	list, ok := a.state.stale[ifc.name]
	if !ok {
		return
	}
	delete(a.state.stale, ifc.name)
	n := 0
	for _, sa := range list {
		if sa.HW != "" && ifc.hw != "" && sa.HW != ifc.hw {
			a.log.Info("state file: address was registered on another link under this name: not deregistering",
				"iface", ifc.name, "addr", sa.Addr, "hwaddr", sa.HW, "now", ifc.hw)
			continue
		}
		if _, ok := ifc.addrs[sa.Addr]; ok || !a.cfg.Deregister || !a.cfg.Enable {
			continue
		}
		k := key{ifc.index, sa.Addr}
		a.owed[k] = true
		a.enqueue(k)
		n++
		a.log.Info("address registered before the restart is gone: deregistering", "iface", ifc.name, "addr", sa.Addr)
	}
	if n > 0 {
		a.log.Info("state file: deregistering addresses gone since the last run", "iface", ifc.name, "addresses", n)
	}
}

// snapshot lists what the server may hold from us: addresses registered
// or with an exchange sent, those owed a deregistration, and the file's
// entries not yet claimed.
func (a *Agent) snapshot() []savedAddr {
	out := []savedAddr{}
	for _, ifc := range a.ifaces {
		for ip, ad := range ifc.addrs {
			if !(ad.hasReg || ad.phase == Registering || ad.phase == Failed) || a.state.forgotten[key{ifc.index, ip}] {
				continue
			}
			sa := savedAddr{Iface: ifc.name, HW: ifc.hw, Addr: ip}
			if ad.hasReg {
				sa.Preferred, sa.Valid, sa.At = scheduler.Seconds(ad.told), scheduler.Seconds(ad.reg.Valid), ad.reg.At.UTC().Round(0)
			}
			out = append(out, sa)
		}
	}
	for k := range a.owed {
		if ifc, ok := a.ifaces[k.ifindex]; ok && !a.state.forgotten[k] {
			out = append(out, savedAddr{Iface: ifc.name, HW: ifc.hw, Addr: k.addr})
		}
	}
	for _, list := range a.state.stale {
		out = append(out, list...)
	}
	slices.SortFunc(out, func(x, y savedAddr) int {
		return cmp.Or(strings.Compare(x.Iface, y.Iface), x.Addr.Compare(y.Addr))
	})
	return out
}

// stateChanged arms the debounce timer after the owner handled anything.
func (a *Agent) stateChanged() {
	s := &a.state
	if s.path == "" || s.armed {
		return
	}
	s.armed = true
	s.timer = a.clock.AfterFunc(stateDebounce, func() {
		select {
		case s.tick <- struct{}{}:
		default:
		}
	})
}

// saveState hands a changed snapshot to the writer, replacing one it has
// not written yet.
func (a *Agent) saveState() {
	s := &a.state
	s.armed = false
	snap := a.snapshot()
	if slices.Equal(snap, s.last) {
		return
	}
	s.last = snap
	select {
	case <-s.out:
	default:
	}
	s.out <- snap
}

// startStateWriter writes snapshots until ctx ends.
func (a *Agent) startStateWriter(ctx context.Context) {
	s := &a.state
	if s.path == "" {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case snap := <-s.out:
				a.writeState(snap)
			}
		}
	}()
}

// saveStateNow writes the final state when the agent stops (the writer
// has ended).
func (a *Agent) saveStateNow() {
	if a.state.path == "" {
		return
	}
	if a.state.timer != nil {
		a.state.timer.Stop()
	}
	a.writeState(a.snapshot())
}

func (a *Agent) writeState(snap []savedAddr) {
	s := &a.state
	err := writeState(s.path, snap)
	switch {
	case err != nil && !s.failing:
		s.failing = true
		a.log.Warn("state file not written", "path", s.path, "err", err)
	case err == nil && s.failing:
		s.failing = false
		a.log.Info("state file written again", "path", s.path)
	}
}
