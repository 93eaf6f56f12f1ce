package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/addrreg/addrreg/internal/metricserver"
	"github.com/addrreg/addrreg/internal/shield"
)

// Per-port metrics, read from the switch's counters at scrape time.
var (
	portLabels = []string{"iface", "trusted"}
	mRxFrames  = prometheus.NewDesc("dhcp6_shield_rx_frames_total", "Frames received on the port.", portLabels, nil)
	mRxBytes   = prometheus.NewDesc("dhcp6_shield_rx_bytes_total", "Bytes received on the port.", portLabels, nil)
	mRxErrors  = prometheus.NewDesc("dhcp6_shield_rx_errors_total", "Receive errors on the port.", portLabels, nil)
	mPassed    = prometheus.NewDesc("dhcp6_shield_passed_total", "Frames received on the port and forwarded.", portLabels, nil)
	mDropped   = prometheus.NewDesc("dhcp6_shield_dropped_total", "Frames received on the port and dropped, by reason (RFC 7610 §5).",
		append(portLabels, "reason"), nil)
	mServerMsgs = prometheus.NewDesc("dhcp6_shield_server_messages_total",
		"DHCPv6 server messages received: passed on a trusted port, dropped on an untrusted one.", portLabels, nil)
	mTxFrames = prometheus.NewDesc("dhcp6_shield_tx_frames_total", "Frames sent out of the port.", portLabels, nil)
	mTxBusy   = prometheus.NewDesc("dhcp6_shield_tx_busy_total", "Sends that found the port's queue full.", portLabels, nil)
	mTxErrors = prometheus.NewDesc("dhcp6_shield_tx_errors_total", "Send errors on the port.", portLabels, nil)
	mLogSupp  = prometheus.NewDesc("dhcp6_shield_log_suppressed_total", "Security log lines suppressed by --log-rate.", portLabels, nil)
	mMACs     = prometheus.NewDesc("dhcp6_shield_mac_table_entries", "Entries in the MAC learning table.", nil, nil)
)

func metricsRegistry(sw *shield.Switch) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.MustRegister(metricserver.Func(func(ch chan<- prometheus.Metric) {
		st := sw.Stats()
		metricserver.Gauge(ch, mMACs, float64(st.MACs))
		for _, p := range st.Ports {
			l := []string{p.Name, "false"}
			if p.Trusted {
				l[1] = "true"
			}
			metricserver.Counter(ch, mRxFrames, float64(p.RxFrames), l...)
			metricserver.Counter(ch, mRxBytes, float64(p.RxBytes), l...)
			metricserver.Counter(ch, mRxErrors, float64(p.RxErrors), l...)
			metricserver.Counter(ch, mPassed, float64(p.Passed), l...)
			for reason, n := range p.Drops {
				metricserver.Counter(ch, mDropped, float64(n), l[0], l[1], reason)
			}
			metricserver.Counter(ch, mServerMsgs, float64(p.ServerMessages), l...)
			metricserver.Counter(ch, mTxFrames, float64(p.TxFrames), l...)
			metricserver.Counter(ch, mTxBusy, float64(p.TxBusy), l...)
			metricserver.Counter(ch, mTxErrors, float64(p.TxErrors), l...)
			metricserver.Counter(ch, mLogSupp, float64(p.LogSuppressed), l...)
		}
	}))
	return r
}
