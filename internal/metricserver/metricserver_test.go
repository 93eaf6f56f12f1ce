package metricserver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestServeAndStop(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	d := prometheus.NewDesc("x_things_total", "Things.", []string{"kind"}, nil)
	reg := prometheus.NewRegistry()
	n := 0.0
	reg.MustRegister(Func(func(ch chan<- prometheus.Metric) {
		n++
		Counter(ch, d, n, "a")
	}))
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, reg, slog.New(slog.DiscardHandler)) }()
	for i := 1; i <= 2; i++ {
		resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := "x_things_total{kind=\"a\"} " + string(rune('0'+i))
		if !strings.Contains(string(b), "# HELP x_things_total Things.") || !strings.Contains(string(b), want) {
			t.Errorf("scrape %d:\n%s\nwant %s", i, b, want)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("still listening after ctx ended")
	}
	goleak.VerifyNone(t, ignore)
	if err := CheckAddr("9547"); err == nil {
		t.Error("CheckAddr accepted a bare port without colon")
	}
}
