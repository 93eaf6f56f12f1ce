package ddns

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/addrreg/addrreg/internal/atomicfile"
)

// Journal keeps the pending DNS work across restarts. The Updater calls
// it from its one goroutine: Load once when it starts, then Apply with
// what changed since the last Apply, batched. A failed Apply is retried
// with the same and newer changes.
//
// Load returns the pending work, and the changes the server wrote to the
// journal itself (with their Seq) that no Apply has taken yet: a server
// that writes a change in the transaction that commits it loses none in
// a crash. The Updater merges them as if enqueued, and lists every Seq
// it has merged or ignored, from Load or Enqueue, in a later Batch.Taken.
//
// The server's database implements it (refserver.DNSJournal: a table
// keyed by address, the changes written by the commit, the outcomes in
// its history, Apply as one transaction); FileJournal is a file, and
// keeps neither changes nor outcomes.
type Journal interface {
	Load() ([]Pending, []Change, error)
	Apply(b Batch) error
}

// Batch is what one Apply writes.
type Batch struct {
	Put  []Pending    // the entries that changed
	Del  []netip.Addr // the addresses whose work is done
	Done []Outcome    // what the finished work did, oldest first
	// Taken: the Seq of the changes now merged into Put (or done, or
	// ignored), which the journal may forget.
	Taken []int64
}

// Outcome is what one finished update did to one record.
type Outcome struct {
	Time time.Time
	Addr netip.Addr
	// Record is "AAAA" or "PTR".
	Record string
	// Name is the AAAA record's owner name, or the name the PTR points
	// to ("" for a PTR removed).
	Name string
	DUID []byte // the client the name is registered to
	// Result: OutcomeAdded, OutcomeRemoved, OutcomeConflict (the name is
	// held by another client: not taken), OutcomeFailed (the first
	// failure of a pending update; it is retried, and its success is
	// recorded in turn).
	Result string
	Err    string // OutcomeFailed: why
}

// The results of an Outcome.
const (
	OutcomeAdded    = "added"
	OutcomeRemoved  = "removed"
	OutcomeConflict = "conflict"
	OutcomeFailed   = "failed"
)

// FileJournal is a Journal in one JSON file, replaced atomically (write a
// temporary file, fsync, rename, fsync the directory) on every Apply. It
// holds only what is pending, normally nothing.
type FileJournal struct {
	path string
	mu   sync.Mutex
	m    map[netip.Addr]Pending
}

// NewFileJournal returns a journal kept at path (created on the first
// Apply).
func NewFileJournal(path string) *FileJournal {
	return &FileJournal{path: path, m: make(map[netip.Addr]Pending)}
}

type journalFile struct {
	Version int       `json:"version"`
	Pending []Pending `json:"pending"`
}

const journalVersion = 1

// Load reads the file; a missing file is an empty journal. It holds no
// changes.
func (j *FileJournal) Load() ([]Pending, []Change, error) {
	ps, err := j.load()
	return ps, nil, err
}

func (j *FileJournal) load() ([]Pending, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	b, err := os.ReadFile(j.path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read DNS journal: %w", err)
	}
	var f journalFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("DNS journal %s: %w", j.path, err)
	}
	if f.Version != journalVersion {
		return nil, fmt.Errorf("DNS journal %s: version %d, want %d", j.path, f.Version, journalVersion)
	}
	clear(j.m)
	for _, p := range f.Pending {
		if p.Addr.IsValid() {
			j.m[p.Addr] = p
		}
	}
	return f.Pending, nil
}

// Apply records b.Put and forgets b.Del, and writes the file; b.Done is
// not kept.
func (j *FileJournal) Apply(b Batch) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, a := range b.Del {
		delete(j.m, a)
	}
	for _, p := range b.Put {
		j.m[p.Addr] = p
	}
	ps := make([]Pending, 0, len(j.m))
	for _, p := range j.m {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b Pending) int { return a.Addr.Compare(b.Addr) })
	return writeFile(j.path, journalFile{Version: journalVersion, Pending: ps})
}

// writeFile replaces path with v as JSON, atomically and durably.
func writeFile(path string, v any) (err error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode DNS journal: %w", err)
	}
	b = append(b, '\n')
	if err := atomicfile.Write(path, b); err != nil {
		return fmt.Errorf("DNS journal: %w", err)
	}
	return nil
}
