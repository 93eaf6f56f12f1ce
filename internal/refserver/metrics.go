package refserver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/addrreg/addrreg/internal/metricserver"
)

// The server's metrics: its Counters read at scrape time, and the commit
// latency histogram observed by the writer.
var (
	mReceived = prometheus.NewDesc("addrreg_refserver_messages_received_total",
		"DHCPv6 messages received on port 547.", nil, nil)
	mSent = prometheus.NewDesc("addrreg_refserver_messages_sent_total",
		"Replies sent.", nil, nil)
	mRegistrations = prometheus.NewDesc("addrreg_refserver_registrations_total",
		"ADDR-REG-INFORMs accepted, by outcome: register (new binding), refresh, move (the address changed client), deregister.",
		[]string{"event"}, nil)
	mExpired = prometheus.NewDesc("addrreg_refserver_bindings_expired_total",
		"Bindings removed because their valid lifetime ran out.", nil, nil)
	mRejects = prometheus.NewDesc("addrreg_refserver_rejects_total",
		"Messages dropped, by reason.", []string{"reason"}, nil)
	mLeasequeries = prometheus.NewDesc("addrreg_refserver_leasequeries_total",
		"Leasequeries answered (RFC 5007).", nil, nil)
	mInfoReplies = prometheus.NewDesc("addrreg_refserver_information_replies_total",
		"Replies to Information-Requests (discovery, RFC 9686 §4.1).", nil, nil)
)

// everyReason lists the drop reasons, so each series exists from the start.
var everyReason = []*Reason{
	ErrTruncated, ErrOversized, ErrMalformed, ErrWrongType, ErrUnsupported, ErrRelayTooDeep, ErrUnknownInterface,
	ErrNoClientID, ErrHasServerID, ErrNoIAAddress, ErrMultipleIAAddress, ErrAddressMismatch, ErrHasORO,
	ErrBadLifetimes, ErrNotGlobal, ErrNotOnLink, ErrHasIA, ErrWrongServerID, ErrNoQuery, ErrRegistrationOff,
	ErrTooManyBindings, ErrRateSource, ErrRateDUID, ErrDatabase, ErrSend,
}

// serverMetrics is what the server observes for metrics beyond Counters.
type serverMetrics struct {
	commit prometheus.Histogram
	// stages: where a durable reply's time went, per message (stageNames).
	stages *prometheus.HistogramVec
	stage  [len(stageNames)]prometheus.Observer
}

// stageNames are the stages of a reply that waits for a commit, from the
// kernel's receive timestamp to the sendmmsg that sent it.
var stageNames = [...]string{
	"socket", // kernel receive → a reader took it (socket buffer, reader scheduling)
	"queue",  // reader took it → its group commit started (handling, waiting for the previous commit)
	"commit", // its group commit (one transaction)
	"send",   // commit done → its batch's replies sent (sender hand-off, sendmmsg)
	"total",  // kernel receive → sent
}

func newServerMetrics() serverMetrics {
	m := serverMetrics{
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "addrreg_refserver_commit_duration_seconds",
			Help: "Database commit (group commit of queued events, fsync included) latency.",
			// 100 µs … ~3 s: an fsync on tmpfs to a slow disk under load.
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "addrreg_refserver_reply_stage_seconds",
			Help: "Time a durable reply spent in each stage, per message: socket (kernel receive to read), " +
				"queue (read to its commit's start), commit, send (commit end to sent), total (kernel receive to sent).",
			// 25 µs … 1 s, each bucket √2 the one before: fine enough
			// to tell 4 ms from 6 ms.
			Buckets: prometheus.ExponentialBucketsRange(0.000025, 1, 32),
		}, []string{"stage"}),
	}
	for i, n := range stageNames {
		m.stage[i] = m.stages.WithLabelValues(n)
	}
	return m
}

// observeStages records the stages of a committed batch's durable replies,
// sent now. A batch's replies go writeBatch per sendmmsg, so "send" is the
// time to the batch's last one: an upper bound for the others.
func (m *serverMetrics) observeStages(b sendBatch) {
	if m.stages == nil {
		return
	}
	sent := time.Now().UnixNano()
	sec := func(d int64) float64 { return float64(max(d, 0)) / 1e9 }
	for _, j := range b.jobs {
		if j.reply == nil || j.rx == 0 || j.read == 0 {
			continue
		}
		m.stage[0].Observe(sec(j.read - j.rx))
		m.stage[1].Observe(sec(b.start - j.read))
		m.stage[2].Observe(sec(b.end - b.start))
		m.stage[3].Observe(sec(sent - b.end))
		m.stage[4].Observe(sec(sent - j.rx))
	}
}

// observeCommit records a commit that started at start.
func (m *serverMetrics) observeCommit(start time.Time) {
	if m.commit != nil {
		m.commit.Observe(time.Since(start).Seconds())
	}
}

// Collectors returns the server's metrics collectors for a registry.
func (s *Server) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.metrics.commit, s.metrics.stages, metricserver.Func(func(ch chan<- prometheus.Metric) {
		c := s.Counters()
		metricserver.Counter(ch, mReceived, float64(c["received"]))
		metricserver.Counter(ch, mSent, float64(c["sent"]))
		for _, ev := range []EventKind{EventRegister, EventRefresh, EventMove, EventDeregister} {
			metricserver.Counter(ch, mRegistrations, float64(c[ev.String()]), ev.String())
		}
		metricserver.Counter(ch, mExpired, float64(c[EventExpire.String()]))
		metricserver.Counter(ch, mLeasequeries, float64(c[EventLeasequery.String()]))
		metricserver.Counter(ch, mInfoReplies, float64(c[EventInfoReply.String()]))
		for _, r := range everyReason {
			metricserver.Counter(ch, mRejects, float64(c[r.Name]), r.Name)
		}
	})}
}
