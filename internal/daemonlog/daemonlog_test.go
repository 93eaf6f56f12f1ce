package daemonlog

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestIsJournal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  string
		want bool
	}{
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino), true},
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), false},
		{fmt.Sprintf("%d:%d", st.Dev+1, st.Ino), false},
		{"", false},
		{"garbage", false},
		{"1:x", false},
	} {
		if got := IsJournal(f, tc.env); got != tc.want {
			t.Errorf("IsJournal(JOURNAL_STREAM=%q) = %v, want %v", tc.env, got, tc.want)
		}
	}
}

func TestJournalPrefixes(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var b bytes.Buffer
		log, err := New(&b, Options{Format: format, Level: slog.LevelDebug, Journal: true})
		if err != nil {
			t.Fatal(err)
		}
		log = log.With("part", "x").WithGroup("g")
		log.Debug("d")
		log.Info("i", "k", "v")
		log.Warn("w")
		log.Error("e", "err", "boom")
		lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
		want := []string{"<7>", "<6>", "<4>", "<3>"}
		if len(lines) != len(want) {
			t.Fatalf("%s: %d lines, want %d:\n%s", format, len(lines), len(want), b.String())
		}
		for i, l := range lines {
			if !strings.HasPrefix(l, want[i]) || strings.Count(l, "<") != 1 {
				t.Errorf("%s: line %d = %q, want prefix %s", format, i, l, want[i])
			}
			if strings.Contains(l, "time") {
				t.Errorf("%s: line %d carries a timestamp under the journal: %q", format, i, l)
			}
		}
	}
}

func TestPlainHasTimestampsNoPrefix(t *testing.T) {
	var b bytes.Buffer
	log, err := New(&b, Options{Format: "text", Level: slog.LevelInfo})
	if err != nil {
		t.Fatal(err)
	}
	log.Error("e")
	if s := b.String(); strings.HasPrefix(s, "<") || !strings.HasPrefix(s, "time=") {
		t.Errorf("plain line %q: want a timestamp and no priority prefix", s)
	}
	if _, err := New(&b, Options{Format: "yaml"}); err == nil {
		t.Error("format yaml accepted")
	}
}
