package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/addrreg/addrreg/agent"
	"github.com/addrreg/addrreg/internal/metricserver"
	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
)

// Metric descriptions. The agent's, the registrar's and netmon's own
// counters are read at scrape time: the agent's through its status
// request (its owner goroutine answers), the others' under their locks.
var (
	mExchanges = prometheus.NewDesc("addrregd_exchanges_started_total",
		"ADDR-REG-INFORM exchanges started, by kind (register includes refreshes; deregister).", []string{"kind"}, nil)
	mReplied = prometheus.NewDesc("addrregd_exchanges_replied_total",
		"Registration exchanges that ended with a valid ADDR-REG-REPLY.", nil, nil)
	mFailed = prometheus.NewDesc("addrregd_exchange_failures_total",
		"Registration exchanges that ended without a reply (retransmissions exhausted, send error).", nil, nil)
	mProbes = prometheus.NewDesc("addrregd_probes_total",
		"Discovery probes (Information-Request exchanges) by outcome: supported, unsupported, error.", []string{"outcome"}, nil)
	mAddresses = prometheus.NewDesc("addrregd_addresses",
		"Addresses by interface and registration phase.", []string{"iface", "phase"}, nil)
	mIfaces = prometheus.NewDesc("addrregd_interface_state",
		"1 for the discovery state each interface is in.", []string{"iface", "state"}, nil)
	mQueue = prometheus.NewDesc("addrregd_pacing_queue_length",
		"Exchanges waiting for --rate/--burst or the in-flight bound.", nil, nil)
	mInflight = prometheus.NewDesc("addrregd_exchanges_in_flight",
		"Exchanges running now.", nil, nil)
	mTransmissions = prometheus.NewDesc("addrregd_transmissions_total",
		"ADDR-REG-INFORM transmissions, retransmissions included.", nil, nil)
	mRetrans = prometheus.NewDesc("addrregd_retransmissions_total",
		"ADDR-REG-INFORM retransmissions (RFC 8415 §15).", nil, nil)
	mInfoReqs = prometheus.NewDesc("addrregd_information_requests_total",
		"Information-Request transmissions (discovery).", nil, nil)
	mAccepted = prometheus.NewDesc("addrregd_replies_accepted_total",
		"Replies accepted (ADDR-REG-REPLY and Reply).", nil, nil)
	mDropped = prometheus.NewDesc("addrregd_replies_dropped_total",
		"Received datagrams discarded, by reason.", []string{"reason"}, nil)
	mSendErrors = prometheus.NewDesc("addrregd_send_errors_total",
		"Transmissions the kernel refused, by errno.", []string{"errno"}, nil)
	mRecvErrors = prometheus.NewDesc("addrregd_receive_errors_total",
		"Failed reads of the registrar's socket (retried with backoff).", nil, nil)
	mResyncs = prometheus.NewDesc("addrregd_netlink_resyncs_total",
		"Netlink sessions restarted after an error (full state re-read).", nil, nil)
	mOverflows = prometheus.NewDesc("addrregd_netlink_overflows_total",
		"Times netmon's event queue overflowed into a full diff.", nil, nil)
	mClockJumps = prometheus.NewDesc("addrregd_clock_jumps_total",
		"Wall-clock jumps (suspend/resume, time set) that refreshed every registration.", nil, nil)
	mRAsAccepted = prometheus.NewDesc("addrregd_ras_accepted_total",
		"Router Advertisements read from the wire (--watch-ras) and accepted.", nil, nil)
	mRAsIgnored = prometheus.NewDesc("addrregd_ras_ignored_total",
		"Router Advertisements read from the wire and ignored, by reason.", []string{"reason"}, nil)
	mRouters = prometheus.NewDesc("addrregd_routers",
		"Routers whose RAs from the wire are kept, over all links.", nil, nil)
	mStatusUp = prometheus.NewDesc("addrregd_agent_up",
		"1 when the agent answered the scrape's status request in time.", nil, nil)
)

// everyDropReason lists the registrar's drop reasons, so each series
// exists from the start (a rate over a series that appears late is wrong).
var everyDropReason = []registrar.DropReason{
	registrar.DropMalformed, registrar.DropInform, registrar.DropTransaction, registrar.DropType,
	registrar.DropDestination, registrar.DropInterface, registrar.DropIAAddress, registrar.DropClientID,
	registrar.DropServerID, registrar.DropAddressGone, registrar.DropBacklog,
}

// metricsRegistry builds the registry --metrics-listen serves.
func metricsRegistry(ag *agent.Agent, reg *registrar.Registrar, mon *netmon.Monitor) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.MustRegister(metricserver.Func(func(ch chan<- prometheus.Metric) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := ag.Status(ctx)
		up := 1.0
		if err != nil {
			up = 0
		}
		metricserver.Gauge(ch, mStatusUp, up)
		if err == nil {
			collectAgent(ch, st)
		}
		rs := reg.Stats()
		metricserver.Counter(ch, mTransmissions, float64(rs.Sent))
		metricserver.Counter(ch, mRetrans, float64(rs.Retransmitted))
		metricserver.Counter(ch, mInfoReqs, float64(rs.Probes))
		metricserver.Counter(ch, mAccepted, float64(rs.Accepted))
		for _, why := range everyDropReason {
			metricserver.Counter(ch, mDropped, float64(rs.Dropped[why]), string(why))
		}
		metricserver.Counter(ch, mRecvErrors, float64(rs.RecvErrors))
		for errno, n := range rs.SendErrors {
			metricserver.Counter(ch, mSendErrors, float64(n), errno)
		}
		ms := mon.Stats()
		metricserver.Counter(ch, mResyncs, float64(ms.Resyncs))
		metricserver.Counter(ch, mOverflows, float64(ms.Overflows))
		metricserver.Counter(ch, mClockJumps, float64(ms.ClockJumps))
		metricserver.Counter(ch, mRAsAccepted, float64(ms.RAsAccepted))
		for reason, n := range ms.RAsIgnored {
			metricserver.Counter(ch, mRAsIgnored, float64(n), reason)
		}
		metricserver.Gauge(ch, mRouters, float64(ms.Routers))
	}))
	return r
}

var (
	everyPhase = []agent.Phase{agent.Pending, agent.Registering, agent.Registered, agent.Failed, agent.Deregistering}
	everyState = []agent.IfState{agent.IfUnknown, agent.IfDown, agent.IfProbing, agent.IfSupported, agent.IfUnsupported}
)

func collectAgent(ch chan<- prometheus.Metric, st agent.Status) {
	c := st.Counters
	metricserver.Counter(ch, mExchanges, float64(c.Registrations), "register")
	metricserver.Counter(ch, mExchanges, float64(c.Deregistrations), "deregister")
	metricserver.Counter(ch, mReplied, float64(c.Replied))
	metricserver.Counter(ch, mFailed, float64(c.Failed))
	for outcome, n := range c.Probes {
		metricserver.Counter(ch, mProbes, float64(n), outcome)
	}
	metricserver.Gauge(ch, mQueue, float64(st.Queued))
	metricserver.Gauge(ch, mInflight, float64(st.InFlight))
	for _, ifc := range st.Interfaces {
		n := map[agent.Phase]int{}
		for _, a := range ifc.Addresses {
			n[a.Phase]++
		}
		for _, p := range everyPhase {
			metricserver.Gauge(ch, mAddresses, float64(n[p]), ifc.Name, p.String())
		}
		for _, s := range everyState {
			v := 0.0
			if s == ifc.State {
				v = 1
			}
			metricserver.Gauge(ch, mIfaces, v, ifc.Name, s.String())
		}
	}
}
