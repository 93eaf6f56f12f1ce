package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.json")
	for _, want := range []string{"first\n", "second, longer than the first\n", ""} {
		if err := Write(path, []byte(want)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Fatalf("read back %q, %v; want %q", got, err, want)
		}
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, %v; want 0600", st.Mode().Perm(), err)
		}
		left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), TempPattern(path)))
		if len(left) != 0 {
			t.Errorf("temporary files left: %v", left)
		}
	}
}

func TestWriteFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "is-a-dir")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("x")); err == nil {
		t.Fatal("replacing a directory succeeded")
	}
	left, _ := filepath.Glob(filepath.Join(dir, TempPattern(path)))
	if len(left) != 0 {
		t.Errorf("temporary files left after a failure: %v", left)
	}
}
