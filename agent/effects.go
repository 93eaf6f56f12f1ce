package agent

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
)

// What the owner loop (lifecycle.go) and the machine say to each other:
// events in, effects out.

// Events: what the owner loop feeds the machine.
type event interface{ isEvent() }

type (
	evNetmon struct{ netmon.Event } // from the monitor
	evProbe  probeResult            // a probe ended
	evResult exchangeResult         // an exchange ended
	evTimer  struct{}               // the wake-up armed by effTimer came
	// evRediscover is SIGHUP: discover afresh on every interface.
	evRediscover struct{}
	// evStop: Run's context ended. Deregistrations owed (and, with
	// DeregisterOnStop, every registration) go out; nothing else starts.
	evStop struct{}
	// evAbandon: StopTimeout ran out; what is in flight is given up.
	evAbandon struct{}
	// evHostName: the name to send changed (the host was renamed).
	evHostName struct{ name string }
)

func (evNetmon) isEvent() {}

func (evProbe) isEvent() {}

func (evResult) isEvent() {}

func (evTimer) isEvent() {}

func (evRediscover) isEvent() {}

func (evStop) isEvent() {}

func (evAbandon) isEvent() {}

func (evHostName) isEvent() {}

type probeResult struct {
	ifindex, gen int
	supported    bool
	err          error
}

type exchangeResult struct {
	k     key
	gen   int
	dereg bool
	res   registrar.Result
	err   error
}

// Effects: what the owner loop does for the machine, in order.
type effect interface{ isEffect() }

type (
	// effProbe starts discovery on a link from a link-local address.
	effProbe struct {
		ifindex, gen int
		ifname       string
		from         netip.Addr
	}
	// effCancel cancels the probe or exchange gen (its result still
	// comes, with context.Canceled if the cancel came first).
	effCancel struct{ gen int }
	// effExchange starts one registration or deregistration exchange.
	effExchange struct {
		k      key
		gen    int
		ifname string
		dereg  bool
		noWait bool        // send once, wait for no reply
		last   netmon.Addr // netmon's last word on the address
		fqdn   string      // the Client FQDN to send; empty: none
	}
	// effTimer arms the loop's one timer for at; zero stops it.
	effTimer struct{ at time.Time }
	// effSave hands a snapshot to the state file's writer.
	effSave struct{ snap []savedAddr }
	// effHeartbeat calls Config.Heartbeat.
	effHeartbeat struct{ s Summary }
	// effLog is one log line.
	effLog struct {
		level slog.Level
		msg   string
		args  []any
	}
)

func (effProbe) isEffect() {}

func (effCancel) isEffect() {}

func (effExchange) isEffect() {}

func (effTimer) isEffect() {}

func (effSave) isEffect() {}

func (effHeartbeat) isEffect() {}

func (effLog) isEffect() {}
