package refserver

import (
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"
)

// TestStorePrewrite: the zeros written ahead of the database keep it whole:
// after commits and write-aheads, a reopened database holds every binding,
// and the file is larger than what bbolt uses (written ahead).
func TestStorePrewrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	st, err := openStore(path)
	if err != nil {
		t.Fatal(err)
	}
	addrs := benchAddrs(3000)
	for i := 0; i < len(addrs); i += 500 {
		var evs []Event
		for _, a := range addrs[i : i+500] {
			ev := registerEvent(a)
			ev.Kind = EventRegister
			evs = append(evs, ev)
		}
		if err := st.apply(evs); err != nil {
			t.Fatal(err)
		}
		if err := st.prewrite(); err != nil {
			t.Fatal(err)
		}
	}
	var used int64
	_ = st.db.View(func(tx *bbolt.Tx) error { used = tx.Size(); return nil })
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() < used+prewriteMin/2 {
		t.Errorf("file %d bytes, bbolt uses %d: nothing written ahead", fi.Size(), used)
	}
	st, err = openStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	bs, err := st.load()
	if err != nil || len(bs) != len(addrs) {
		t.Fatalf("reopened: %d bindings, %v; want %d", len(bs), err, len(addrs))
	}
	if h, err := st.history(); err != nil || len(h) != len(addrs) {
		t.Fatalf("reopened: %d history records, %v; want %d", len(h), err, len(addrs))
	}
}
