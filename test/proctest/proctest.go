// Package proctest reads what a process has cost from /proc, for tests and
// benchmarks that measure a daemon (or QEMU) they started. Linux only.
package proctest

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// userHZ is the unit of /proc/PID/stat's times: USER_HZ, 100 on every Linux
// architecture (proc(5), sysconf(_SC_CLK_TCK)).
const userHZ = 100

// ReadCPU returns the CPU time (user and system) process pid has used so
// far: /proc/PID/stat fields 14 (utime) and 15 (stime), in 1/100 s.
func ReadCPU(pid int) (time.Duration, error) {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read CPU time: %w", err)
	}
	return parseStat(path, data)
}

// CPU is ReadCPU that fails tb on error.
func CPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	d, err := ReadCPU(pid)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// parseStat reads utime and stime from the contents of a /proc/PID/stat.
// The command name (field 2) is in parentheses and may hold spaces and
// parentheses itself, so fields are counted from its last ')': state is
// field 3, utime 14, stime 15.
func parseStat(path string, data []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: no command name in %q", path, data)
	}
	f := bytes.Fields(data[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: %d fields after the command name, want at least 13", path, len(f))
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%s: utime %q, stime %q: not numbers", path, f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}
