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
func (m *machine) scheduleRetry(ifc *iface, ad *addr) {
	ad.failures++
	valid := ad.cur.Valid
	if !ad.cur.Observed.IsZero() {
		_, valid = ad.cur.Remaining(m.now)
	}
	d := m.cfg.Retry.Delay(ad.failures, m.cfg.Policy.Interval(valid, static(ad.cur)), m.cfg.Rand)
	k := key{ifc.index, ad.cur.IP}
	m.deadlines.Set(k, m.now.Add(d))
	m.debug("registration retry scheduled", "iface", ifc.name, "addr", k.addr, "in", d, "failures", ad.failures)
}

// fatalError records err as the end of Run when it says a component is
// gone for good (the registrar's socket closed or broken), and reports
// whether it did. Everything else is retried.
func (m *machine) fatalError(err error) bool {
	if err == nil || !(errors.Is(err, registrar.ErrSocketBroken) || errors.Is(err, net.ErrClosed)) {
		return false
	}
	if m.fatal == nil && !m.stopping {
		m.fatal = fmt.Errorf("registrar: %w", err)
	}
	return true
}
