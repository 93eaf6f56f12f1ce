package refserver

import (
	"github.com/ncruces/go-sqlite3/vfs"
)

// walBufVFS is the operating system's VFS ("os") but for the WAL file,
// whose contiguous writes it gathers and hands to the kernel in one
// pwrite. SQLite writes each WAL frame as two writes (its 24-byte header,
// then the page), so a commit that changes 100 pages costs 200 system
// calls; gathered, it costs one or a few. Nothing reaches the disk later
// than with "os": the gathered bytes are written before the file is
// synced, read, sized, truncated or closed, and SQLite syncs the WAL
// (synchronous=FULL) before a commit returns and before other
// connections can see it. The writer connection uses it (sqliteDSN).
type walBufVFS struct{ vfs.VFSFilename }

// walBufVFSName is the name the writer's DSN gives it (vfs=).
const walBufVFSName = "addrreg-walbuf"

func init() {
	vfs.Register(walBufVFSName, walBufVFS{vfs.Find("os").(vfs.VFSFilename)})
}

func (v walBufVFS) Open(name string, flags vfs.OpenFlag) (vfs.File, vfs.OpenFlag, error) {
	f, fl, err := v.VFSFilename.Open(name, flags)
	return wrapWAL(f, flags, err), fl, err
}

func (v walBufVFS) OpenFilename(name *vfs.Filename, flags vfs.OpenFlag) (vfs.File, vfs.OpenFlag, error) {
	f, fl, err := v.VFSFilename.OpenFilename(name, flags)
	return wrapWAL(f, flags, err), fl, err
}

func wrapWAL(f vfs.File, flags vfs.OpenFlag, err error) vfs.File {
	if err != nil || flags&vfs.OPEN_WAL == 0 {
		return f
	}
	return &walBufFile{File: f}
}

// walBufMax bounds what a walBufFile gathers before it writes (a large
// transaction's frames go out in pieces of this size).
const walBufMax = 1 << 20

// walBufFile gathers contiguous writes to a WAL file.
type walBufFile struct {
	vfs.File
	buf []byte
	off int64 // where buf goes in the file
}

func (f *walBufFile) WriteAt(p []byte, off int64) (int, error) {
	if len(f.buf) > 0 && off == f.off+int64(len(f.buf)) && len(f.buf)+len(p) <= walBufMax {
		f.buf = append(f.buf, p...)
		return len(p), nil
	}
	if err := f.flush(); err != nil {
		return 0, err
	}
	if len(p) > walBufMax {
		return f.File.WriteAt(p, off)
	}
	f.buf, f.off = append(f.buf[:0], p...), off
	return len(p), nil
}

// flush writes what was gathered. An error is SQLite's I/O error of the
// sync, read … that flushed: the commit fails, and its frames, never
// synced, are not part of the database.
func (f *walBufFile) flush() error {
	if len(f.buf) == 0 {
		return nil
	}
	_, err := f.File.WriteAt(f.buf, f.off)
	f.buf = f.buf[:0]
	return err
}

func (f *walBufFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.flush(); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

func (f *walBufFile) Sync(flags vfs.SyncFlag) error {
	if err := f.flush(); err != nil {
		return err
	}
	return f.File.Sync(flags)
}

func (f *walBufFile) Size() (int64, error) {
	if err := f.flush(); err != nil {
		return 0, err
	}
	return f.File.Size()
}

func (f *walBufFile) Truncate(size int64) error {
	if err := f.flush(); err != nil {
		return err
	}
	return f.File.Truncate(size)
}

func (f *walBufFile) Close() error {
	err := f.flush()
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	return err
}
