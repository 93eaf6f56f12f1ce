package agent

import (
	"errors"
	"fmt"
	"net"

	"github.com/addrreg/addrreg/registrar"
)

// Retrying failed exchanges. RFC 9686 §4.5 bounds one exchange (MRC
// transmissions) and says nothing of what follows a failed one; the refresh
// rule alone would leave the address unknown to the server for most of its
// lifetime (4 h for a static one). So every failed address gets a new
// exchange (new transaction ID, full MRC) after Config.Retry's backoff:
// about 30 s, doubling, capped at the address's refresh interval and at
// Retry.Max, reset by a success. A server that drops everything sees at
// most MRC transmissions per address per backoff step.

// scheduleRetry records one more failure of ad and schedules its next
// exchange. Every path to Failed goes through here, so no address sits
// failed without a retry due.
func (a *Agent) scheduleRetry(ifc *iface, ad *addr) {
	ad.failures++
	now := a.clock.Now()
	valid := ad.cur.Valid
	if !ad.cur.Observed.IsZero() {
		_, valid = ad.cur.Remaining(now)
	}
	d := a.cfg.Retry.Delay(ad.failures, a.cfg.Policy.Interval(valid, a.static(ad.cur)), a.cfg.Rand)
	k := key{ifc.index, ad.cur.IP}
	a.deadlines.Set(k, now.Add(d))
	a.log.Debug("registration retry scheduled", "iface", ifc.name, "addr", k.addr, "in", d, "failures", ad.failures)
}

// registered reports whether k's address is registered (its deadline is a
// refresh, not a retry).
func (a *Agent) registered(k key) bool {
	ifc, ok := a.ifaces[k.ifindex]
	if !ok {
		return false
	}
	ad, ok := ifc.addrs[k.addr]
	return ok && ad.phase == Registered
}

// ifname is the interface's name for the registrar's errors and logs (it
// then looks nothing up).
func (a *Agent) ifname(index int) string {
	if ifc, ok := a.ifaces[index]; ok {
		return ifc.name
	}
	return ""
}

// fatalError records err as the end of Run when it says a component is
// gone for good (the registrar's socket closed or broken), and reports
// whether it did. Everything else is retried.
func (a *Agent) fatalError(err error) bool {
	if err == nil || !(errors.Is(err, registrar.ErrSocketBroken) || errors.Is(err, net.ErrClosed)) {
		return false
	}
	if a.fatal == nil && !a.stopping {
		a.fatal = fmt.Errorf("registrar: %w", err)
	}
	return true
}
