// Package atomicfile replaces a file's contents so that a crash at any
// moment leaves the old file or the new one, never a mix: the data goes to
// a temporary file beside it (mode 0600), which is synced, renamed over the
// file, and the directory synced, so that the rename is durable too.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// TempPattern names the temporary files Write makes beside path (a
// os.CreateTemp pattern, "." + base + ".tmp*"): a reader may remove those
// a killed writer left.
func TempPattern(path string) string { return "." + filepath.Base(path) + ".tmp*" }

// Write replaces the file at path with b, atomically and durably, making
// its directory (mode 0700) if it is missing.
func Write(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("directory of %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, TempPattern(path))
	if err != nil {
		return fmt.Errorf("temporary file for %s: %w", path, err)
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
