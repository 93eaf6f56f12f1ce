package topo

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Scrape GETs http://addr/metrics from inside the node's namespace (the
// connection is made there; the request runs on it from the test) and
// returns the body. It fails the test unless the answer is 200.
func (nd *Node) Scrape(t testing.TB, addr string) string {
	t.Helper()
	var c net.Conn
	err := nd.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("scrape %s in %s: %v", addr, nd.Name, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", addr); err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	r := bufio.NewReader(c)
	status, err := r.ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		t.Fatalf("scrape %s: status %q, %v", addr, status, err)
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("scrape %s: headers: %v", addr, err)
		}
		if l == "\r\n" {
			break
		}
	}
	body, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("scrape %s: body: %v", addr, err)
	}
	return string(body)
}

// CheckMetrics runs Debian's `promtool check metrics` on a scrape and
// fails the test on any problem it reports.
func CheckMetrics(t testing.TB, text string) {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatalf("promtool not found (Debian package prometheus; make deps installs it): %v", err)
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// MetricValue returns the value of one series in a scrape: series is
// written as the exposition format writes it, name{label="v",…} with the
// labels in name order, or the bare name.
func MetricValue(text, series string) (float64, bool) {
	for l := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(l, series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		return v, err == nil
	}
	return 0, false
}
