package packaging

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// fleetBlocks returns the fenced code blocks of README.md's "On a fleet"
// section.
func fleetBlocks(t *testing.T) []string {
	t.Helper()
	readme := readFile(t, filepath.Join(repo(t), "README.md"))
	start := strings.Index(readme, "\n## On a fleet\n")
	if start < 0 {
		t.Fatal(`README.md has no "## On a fleet" section`)
	}
	section := readme[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```[a-z]*\n(.*?)```").FindAllStringSubmatch(section, -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// rulesTest feeds the README's alert rules made-up series: host a has an
// interface whose network asks for registrations and no address
// registered, and 20% of its registrations fail; host b has addresses
// registered and no failures. Only a alerts, and the no-registration alert
// only after 6 hours.
const rulesTest = `rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'addrregd_interface_state{instance="a:9547",iface="eth0",state="supported"}'
        values: '1x600'
      - series: 'addrregd_addresses{instance="a:9547",iface="eth0",phase="registered"}'
        values: '0x600'
      - series: 'addrregd_interface_state{instance="b:9547",iface="eth0",state="supported"}'
        values: '1x600'
      - series: 'addrregd_addresses{instance="b:9547",iface="eth0",phase="registered"}'
        values: '2x600'
      - series: 'addrregd_exchange_failures_total{instance="a:9547"}'
        values: '0+0.2x600'
      - series: 'addrregd_exchanges_started_total{instance="a:9547",kind="register"}'
        values: '0+1x600'
      - series: 'addrregd_exchange_failures_total{instance="b:9547"}'
        values: '0+0x600'
      - series: 'addrregd_exchanges_started_total{instance="b:9547",kind="register"}'
        values: '0+1x600'
    alert_rule_test:
      - eval_time: 5h
        alertname: AddrregdNoRegistration
      - eval_time: 7h
        alertname: AddrregdNoRegistration
        exp_alerts:
          - exp_labels: {instance: "a:9547", iface: eth0, state: supported}
            exp_annotations:
              summary: "a:9547 eth0: no address registered for 6 hours (addrregd status)"
      - eval_time: 2h
        alertname: AddrregdFailuresRising
        exp_alerts:
          - exp_labels: {instance: "a:9547"}
            exp_annotations:
              summary: "a:9547: over 10% of registrations fail (no reply after every retransmission)"
`

// README's fleet section: the Prometheus scrape configuration passes
// promtool check config, the alert rules promtool test rules (rulesTest),
// and every addrregd_ metric it names is one addrregd serves.
func TestFleetSnippets(t *testing.T) {
	need(t, "promtool")
	dir := t.TempDir()
	var rules, config bool
	for _, b := range fleetBlocks(t) {
		switch {
		case strings.HasPrefix(b, "groups:"):
			rules = true
			if err := os.WriteFile(filepath.Join(dir, "rules.yml"), []byte(b), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "test.yml"), []byte(rulesTest), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Log(run(t, dir, nil, "promtool", "test", "rules", "test.yml"))
		case strings.HasPrefix(b, "scrape_configs:"):
			config = true
			if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(b), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Log(run(t, dir, nil, "promtool", "check", "config", "prometheus.yml"))
		}
	}
	if !rules || !config {
		t.Fatalf("README's fleet section: alert rules found %v, scrape config found %v", rules, config)
	}
	code := readFile(t, filepath.Join(repo(t), "cmd/addrregd/metrics.go"))
	for _, b := range fleetBlocks(t) {
		for _, m := range regexp.MustCompile(`\baddrregd_[a-z_]+`).FindAllString(b, -1) {
			if !strings.Contains(code, `"`+m+`"`) {
				t.Errorf("README's fleet section names %s, which addrregd does not serve", m)
			}
		}
	}
}
