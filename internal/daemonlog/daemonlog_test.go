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

// TestJournalDetected: New(os.Stderr, …) writes journal lines ("<6>…", no
// time) exactly when fd 2 is the stream JOURNAL_STREAM names; a stream of
// another inode or device, or a malformed variable, gets ordinary lines.
func TestJournalDetected(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	saved, err := unix.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(saved)
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
		t.Setenv("JOURNAL_STREAM", tc.env)
		if err := f.Truncate(0); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Seek(0, 0); err != nil { // fd 2 shares the offset
			t.Fatal(err)
		}
		if err := unix.Dup2(int(f.Fd()), 2); err != nil {
			t.Fatal(err)
		}
		log, err := New(os.Stderr, Options{})
		if err == nil {
			log.Info("hello")
		}
		if err := unix.Dup2(saved, 2); err != nil {
			t.Fatal(err)
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.HasPrefix(string(b), "<6>") && !strings.Contains(string(b), "time="); got != tc.want {
			t.Errorf("JOURNAL_STREAM=%q: wrote %q, journal format %v, want %v", tc.env, b, got, tc.want)
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
