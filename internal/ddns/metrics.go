package ddns

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Updater's Prometheus series.
type metrics struct {
	updates   *prometheus.CounterVec // record, op, result
	conflicts prometheus.Counter
	dropped   prometheus.Counter
	journal   prometheus.Counter
	pending   prometheus.GaugeFunc
}

// resultNoAnswer is the result label of an update that got no answer
// (timeout, refused connection, bad TSIG on the answer).
const resultNoAnswer = "no_answer"

func newMetrics(pending func() float64) metrics {
	m := metrics{
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "addrreg_refserver_ddns_updates_total",
			Help: "DNS UPDATE messages sent (RFC 2136), by record (AAAA, DHCID, PTR), op (add, remove) and result " +
				"(the answer's RCODE, e.g. NOERROR, YXDOMAIN, NXRRSET, REFUSED; no_answer when none came).",
		}, []string{"record", "op", "result"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "addrreg_refserver_ddns_conflicts_total",
			Help: "Names not published because another client (or an operator) holds them (RFC 4703 DHCID mismatch).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "addrreg_refserver_ddns_dropped_total",
			Help: "Binding changes not sent to DNS because the queue was full.",
		}),
		journal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "addrreg_refserver_ddns_journal_errors_total",
			Help: "Failed writes of the pending DNS work to its journal (retried).",
		}),
		pending: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "addrreg_refserver_ddns_pending",
			Help: "Addresses whose DNS records are not yet as their bindings say (queued or being retried).",
		}, pending),
	}
	for _, r := range []string{"AAAA", "PTR"} {
		for _, op := range []string{"add", "remove"} {
			m.updates.WithLabelValues(r, op, "NOERROR")
			m.updates.WithLabelValues(r, op, resultNoAnswer)
		}
	}
	return m
}

// Collectors returns the Updater's metrics for a registry.
func (u *Updater) Collectors() []prometheus.Collector {
	return []prometheus.Collector{u.m.updates, u.m.conflicts, u.m.dropped, u.m.journal, u.m.pending}
}
