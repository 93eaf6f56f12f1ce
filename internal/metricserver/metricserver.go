// Package metricserver serves a daemon's Prometheus metrics over HTTP
// (--metrics-listen) in the text exposition format.
//
// The library is prometheus/client_golang: it writes HELP and TYPE for
// every family (promtool check metrics lints their absence), and its
// Collector interface lets a daemon build its metrics at scrape time from
// the snapshot its owner goroutine already produces, so the hot paths keep
// their plain counters and take no metrics lock. VictoriaMetrics/metrics is
// smaller but writes no HELP lines and wants every value registered up front.
package metricserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// CheckAddr validates a --metrics-listen value: HOST:PORT, host optional.
func CheckAddr(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("want HOST:PORT, [IPv6]:PORT or :PORT (e.g. [::1]:9000, 127.0.0.1:9000 or :9000), not %q", addr)
	}
	return nil
}

// Listen opens the TCP listener for addr.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve answers GET /metrics on ln with reg's metrics until ctx ends; it
// then closes ln and returns nil.
func Serve(ctx context.Context, ln net.Listener, reg *prometheus.Registry, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       5 * time.Second,
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	shutDown := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(shutDown)
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	log.Info("serving metrics", "addr", ln.Addr().String())
	err := srv.Serve(ln)
	if stop() {
		srv.Close() // Serve failed on its own
	} else {
		<-shutDown // no goroutine outlives Serve
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server on %s: %w", ln.Addr(), err)
	}
	return nil
}

// Func is an unchecked Collector whose metrics fn makes at every scrape.
type Func func(ch chan<- prometheus.Metric)

// Describe implements prometheus.Collector: it describes nothing, which
// makes the collector unchecked (its label sets vary with the state).
func (Func) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (f Func) Collect(ch chan<- prometheus.Metric) { f(ch) }

// Counter sends a counter sample of d.
func Counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

// Gauge sends a gauge sample of d.
func Gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}
