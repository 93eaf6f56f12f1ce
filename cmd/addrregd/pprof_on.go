//go:build addrreg_pprof

package main

import (
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux
	"os"
)

// In profiling builds only (-tags addrreg_pprof, BenchmarkE2EIdle10k with
// ADDRREG_BENCH_PPROF): with ADDRREG_PPROF set to a path, net/http/pprof
// serves on a unix socket there. A file path reaches the daemon across
// network namespaces, where a TCP port would not. The product has no such
// listener.
func init() {
	path := os.Getenv("ADDRREG_PPROF")
	if path == "" {
		return
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		panic("pprof listener: " + err.Error())
	}
	go http.Serve(l, nil) //nolint:errcheck // ends with the process
}
