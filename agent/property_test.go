package agent

import (
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
)

// A property test of the machine: random sequences of what the kernel,
// the network and the server can do (links going down and up, renamed,
// removed; RA flags coming and going; addresses added, updated, made
// tentative, removed or expiring; probes and exchanges answered, lost,
// refused or left hanging; the clock moving, jumping; SIGHUP; the host
// renamed; a stop) are
// stepped through the synchronous harness, and after every step the
// invariants below must hold. The kernel and the server are modelled
// here, so the checks compare the machine with what really is, not with
// itself.
//
// Invariants (checkInvariants):
//   - timer: the armed wake-up is the machine's earliest deadline, and
//     it is in the future (the harness fires what is due);
//   - queue: every queued key once, the set and the list agree;
//   - in flight: the count equals the exchanges really running, an
//     address is registering exactly when one of them is its own, and no
//     address has two at once (nor a registration racing its
//     deregistration);
//   - on the wire: an INFORM goes out only for an address assigned on a
//     link that is up and, with RequireRAFlags, has an RA with M or O in
//     effect (RFC 9686 §4.1); a deregistration (before the stop) only for
//     one that is not assigned (§4.7);
//   - liveness: an address the machine should register (eligible) is
//     running, queued, due later, paused while the RA condition lapses,
//     waiting for its deregistration to end, or registered with a finite
//     lifetime (then only a lifetime change schedules its refresh, RFC
//     9686 §4.6); a paused address's link really lacks the RA condition;
//   - refresh: a registered address whose lifetime differs from what the
//     server was told (beyond the tolerance) has a refresh due no later
//     than §4.6's min(now + interval, NextAddrRegRefreshTime);
//   - nothing lost: every registrable address of a link the machine
//     follows is known to it;
//   - name: a registered address whose exchange told the server another
//     host name than the current one is queued, running or paused (a
//     rename re-registers every registered address), and the server's
//     binding carries the name the machine believes it told;
//   - owed: every deregistration owed is queued or due; none is owed on a
//     link that is down, and none waits for a link that is up with
//     registration support (claimStale took them), nor after the bound of
//     its binding on the server has passed (dropStale);
//   - server: every binding the server holds (this run's, or the state
//     file's from the last run) for an address gone from its link, up
//     down (an admin down flushes them all: the deregistration waits
//     for the link) or removed, is owed, in flight or in the state file's
//     snapshot; after the stop, every binding still held is in the
//     snapshot. No deregistration is owed on a link that is down.
//     A link that was removed is no exception: its deregistrations wait
//     for a link of that name (linkGone). Excused, by design: one that
//     went tentative or DAD-failed (it may be another node's).
//
// The sequences come from fixed seeds (TestMachineProperties) or from
// the fuzzer's bytes (FuzzMachine). The machine's own map iteration
// order varies between runs; the invariants hold for every order.

// chooser is where the sequence's choices come from: a seeded PRNG, or a
// fuzzer's bytes.
type chooser interface{ intn(n int) int }

type prngChooser struct{ r *mrand.Rand }

func (c prngChooser) intn(n int) int { return c.r.IntN(n) }

type byteChooser struct {
	b []byte
	i int
}

func (c *byteChooser) intn(n int) int {
	if c.i >= len(c.b) {
		return 0
	}
	v := int(c.b[c.i])
	c.i++
	return v % n
}

func (c *byteChooser) done() bool { return c.i >= len(c.b) }

// propLink is one interface as the kernel has it.
type propLink struct {
	index  int
	name   string
	hw     byte // its MAC's last byte: it keeps it when re-created
	exists bool
	up     bool
	m, o   bool
	ll     bool
	pool   []netip.Addr
	addrs  map[netip.Addr]netmon.Addr
}

// binding is what the model server holds for an address.
type binding struct {
	ifindex int
	expires time.Time // zero: never
	since   time.Time // the send that made or refreshed it
	// excused: the address went tentative or DAD-failed since; the agent
	// then deliberately stops following it (addresses.go, handleAddr).
	excused bool
	name    string // the Client FQDN of the send that made or refreshed it
}

type propRun struct {
	t      *testing.T
	h      *harness
	c      chooser
	links  []*propLink
	owner  map[netip.Addr]*propLink // pool address → its link
	server map[netip.Addr]binding
	seen   int // sends folded into server
	// late: indexes of sends recorded when a hanging exchange ended
	// (retransmissions of an exchange started earlier).
	late  map[int]bool
	cfg   Config
	trace []string
}

var propTail = 400

const propExcluded = "tmp0" // a name the agent is told to leave alone

func newPropRun(t *testing.T, c chooser) *propRun {
	cfg := Config{Enable: true, Deregister: true, Exclude: []string{propExcluded}}
	cfg.RequireRAFlags = c.intn(4) != 0
	cfg.DeregisterOnStop = c.intn(2) == 0
	cfg.SkipTemporary = c.intn(4) == 0
	if c.intn(3) == 0 {
		cfg.Rate, cfg.Burst = 2, 1
	}
	if c.intn(3) == 0 {
		cfg.MaxInflight = 1 + c.intn(3)
	}
	if c.intn(2) == 0 {
		cfg.StatePath = "/nonexistent/addrreg-property/state.json"
	}
	if c.intn(2) == 0 {
		cfg.Heartbeat, cfg.HeartbeatInterval = func(Summary) {}, 10*time.Minute
	}
	p := &propRun{t: t, c: c, owner: map[netip.Addr]*propLink{}, server: map[netip.Addr]binding{}, late: map[int]bool{}, cfg: cfg}
	p.h = start(t, cfg, c.intn(5) != 0)
	p.h.mon.clk = p.h.clk
	for i, name := range []string{"eth0", "eth1"} {
		l := &propLink{index: 2 + i, name: name, hw: byte(1 + i), addrs: map[netip.Addr]netmon.Addr{}}
		for j := 1; j <= 3; j++ {
			ip := netip.MustParseAddr(fmt.Sprintf("2001:db8:%d::%d", i, j))
			l.pool = append(l.pool, ip)
			p.owner[ip] = l
		}
		p.links = append(p.links, l)
	}
	if cfg.StatePath != "" {
		p.h.writer = nil // the snapshots are checked, not written
	}
	// A state file from the last run: bindings the server still holds.
	for _, l := range p.links {
		for _, ip := range l.pool {
			if p.c.intn(4) == 0 {
				p.server[ip] = binding{ifindex: l.index, since: t0}
				p.h.m.stale.byIface[l.name] = append(p.h.m.stale.byIface[l.name], savedAddr{Iface: l.name, HW: p.link(l).HardwareAddr.String(), Addr: ip})
			}
		}
	}
	p.logf("config: require_ra=%t dereg_on_stop=%t skip_temp=%t rate=%v inflight=%d supported=%t",
		cfg.RequireRAFlags, cfg.DeregisterOnStop, cfg.SkipTemporary, p.h.ag.cfg.Rate, p.h.ag.cfg.MaxInflight, p.h.reg.supported)
	return p
}

func (p *propRun) logf(format string, args ...any) {
	p.trace = append(p.trace, fmt.Sprintf("%v ", p.h.clk.Now().Sub(t0))+fmt.Sprintf(format, args...))
}

func (p *propRun) fail(format string, args ...any) {
	p.t.Helper()
	tail := p.trace
	if len(tail) > propTail {
		tail = tail[len(tail)-propTail:]
	}
	p.t.Fatalf("%s\nafter:\n  %s", fmt.Sprintf(format, args...), strings.Join(tail, "\n  "))
}

func (p *propRun) link(l *propLink) netmon.Link {
	return netmon.Link{Index: l.index, Name: l.name, Up: l.up, LowerUp: l.up, Managed: l.m, Other: l.o,
		HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, l.hw}}
}

func (p *propRun) send(kind netmon.EventKind, l *propLink, a netmon.Addr) {
	switch kind {
	case netmon.AddrAdded, netmon.AddrUpdated, netmon.AddrRemoved:
		p.logf("%v %s %s valid %v reg %t", kind, l.name, a.IP, a.Valid, a.Registrable)
	default:
		p.logf("%v %s up=%t M=%t O=%t", kind, l.name, l.up, l.m, l.o)
	}
	p.h.mon.send(netmon.Event{Kind: kind, Link: p.link(l), Addr: a})
}

func (p *propRun) linkLocal(l *propLink) netmon.Addr {
	return netmon.Addr{Index: l.index, Ifname: l.name, IP: netip.MustParseAddr(fmt.Sprintf("fe80::%d", l.index)), PrefixLen: 64,
		Valid: netmon.Infinite, Preferred: netmon.Infinite, Class: netmon.ClassLinkLocal, State: netmon.StatePreferred}
}

// setAddr puts a into the kernel and tells the agent.
func (p *propRun) setAddr(l *propLink, a netmon.Addr) {
	_, known := l.addrs[a.IP]
	l.addrs[a.IP] = a
	p.h.mon.mu.Lock()
	p.h.mon.addrs[a.IP] = a
	p.h.mon.mu.Unlock()
	kind := netmon.AddrAdded
	if known {
		kind = netmon.AddrUpdated
	}
	p.send(kind, l, a)
}

func (p *propRun) delAddr(l *propLink, ip netip.Addr) {
	a := l.addrs[ip]
	delete(l.addrs, ip)
	p.h.mon.mu.Lock()
	delete(p.h.mon.addrs, ip)
	p.h.mon.mu.Unlock()
	p.send(netmon.AddrRemoved, l, a)
}

func (p *propRun) newAddr(l *propLink, ip netip.Addr) netmon.Addr {
	a := netmon.Addr{Index: l.index, Ifname: l.name, IP: ip, PrefixLen: 64, Observed: p.h.clk.Now(),
		Class: netmon.ClassGlobal, State: netmon.StatePreferred, Registrable: true}
	switch p.c.intn(4) {
	case 0:
		a.Class, a.Valid, a.Preferred = netmon.ClassStatic, netmon.Infinite, netmon.Infinite
	case 1:
		a.Class = netmon.ClassTemporary
		fallthrough
	default:
		a.Valid = []time.Duration{90 * time.Second, 10 * time.Minute, 2 * time.Hour, 30 * time.Hour}[p.c.intn(4)]
		a.Preferred = a.Valid / 2
	}
	return a
}

func (p *propRun) setReg(f func(r *fakeReg)) {
	p.h.reg.mu.Lock()
	defer p.h.reg.mu.Unlock()
	f(p.h.reg)
}

// step does one random thing.
func (p *propRun) step() {
	l := p.links[p.c.intn(len(p.links))]
	switch p.c.intn(20) {
	case 0, 1: // carrier (or admin) down / up
		if !l.exists {
			l.exists, l.up = true, true
			p.send(netmon.LinkAdded, l, netmon.Addr{})
			return
		}
		l.up = !l.up
		if l.up {
			l.m, l.o = false, false // netmon: flags read false on a new attachment
			p.send(netmon.LinkChanged, l, netmon.Addr{})
		} else {
			p.send(netmon.LinkUpdated, l, netmon.Addr{})
		}
	case 2: // an RA's M/O flags change (or its router's lifetime ends)
		if !l.exists {
			return
		}
		l.m, l.o = p.c.intn(2) == 0, p.c.intn(2) == 0
		p.send(netmon.RAFlags, l, netmon.Addr{})
	case 3: // the link-local address comes or goes
		if !l.exists {
			return
		}
		l.ll = !l.ll
		lla := p.linkLocal(l)
		if l.ll {
			p.send(netmon.AddrAdded, l, lla)
		} else {
			p.send(netmon.AddrRemoved, l, lla)
		}
	case 4, 5: // an address is added, or its lifetimes change (an RA)
		if !l.exists {
			return
		}
		ip := l.pool[p.c.intn(len(l.pool))]
		a, ok := l.addrs[ip]
		if !ok || p.c.intn(3) == 0 {
			a = p.newAddr(l, ip)
		} else if a.Valid != netmon.Infinite {
			a.Observed = p.h.clk.Now()
			a.Valid = []time.Duration{90 * time.Second, 10 * time.Minute, 2 * time.Hour, 30 * time.Hour}[p.c.intn(4)]
			a.Preferred = a.Valid / 2
		}
		p.setAddr(l, a)
	case 6: // an address is removed
		if len(l.addrs) == 0 {
			return
		}
		p.delAddr(l, p.anyAddr(l))
	case 7: // DAD again, or DAD done
		if len(l.addrs) == 0 {
			return
		}
		a := l.addrs[p.anyAddr(l)]
		if a.Registrable {
			a.State, a.Registrable = netmon.StateTentative, false
			if b, ok := p.server[a.IP]; ok {
				b.excused = true
				p.server[a.IP] = b
			}
		} else {
			a.State, a.Registrable = netmon.StatePreferred, true
		}
		p.setAddr(l, a)
	case 8, 9, 10: // time passes
		d := []time.Duration{100 * time.Millisecond, time.Second, 5 * time.Second, 30 * time.Second,
			5 * time.Minute, time.Hour, 5 * time.Hour}[p.c.intn(7)]
		p.advance(d)
	case 11: // the server's or the network's behaviour changes
		mode := p.c.intn(6)
		p.logf("registrar mode %d", mode)
		p.setReg(func(r *fakeReg) {
			r.fail, r.silent, r.refuse = mode == 1, mode == 2, mode == 3
			r.holdDereg = mode == 4
		})
		p.h.mon.mu.Lock()
		p.h.mon.lookErr = nil
		if mode == 5 { // netmon's lookups fail (ENOBUFS): its last word counts
			p.h.mon.lookErr = errRefused
		}
		p.h.mon.mu.Unlock()
	case 12: // a hanging exchange ends
		p.releaseOne()
	case 13: // discovery's outcome changes; a hanging probe ends
		mode := p.c.intn(4)
		p.logf("probe mode %d", mode)
		p.setReg(func(r *fakeReg) {
			r.supported = mode != 1
			r.probeErr = nil
			if mode == 2 {
				r.probeErr = errRefused
			}
			r.blockProbe = mode == 3
		})
		p.releaseProbe()
	case 14: // SIGHUP
		p.logf("rediscover")
		p.h.deliver(evRediscover{})
	case 15: // suspend/resume: the wall clock jumped
		p.logf("clock jump")
		p.h.mon.send(netmon.Event{Kind: netmon.ClockJump})
	case 16: // the interface goes away (its addresses with it), or comes back
		if !l.exists {
			if p.c.intn(2) == 0 { // re-created under another index
				l.index ^= 16
			}
			l.exists, l.up = true, p.c.intn(2) == 0
			p.send(netmon.LinkAdded, l, netmon.Addr{})
			return
		}
		if p.c.intn(3) != 0 {
			return
		}
		// netmon may report the addresses gone first, or only the link.
		events := p.c.intn(2) == 0
		for _, ip := range p.sortedAddrs(l) {
			if events {
				p.delAddr(l, ip)
				continue
			}
			delete(l.addrs, ip)
			p.h.mon.mu.Lock()
			delete(p.h.mon.addrs, ip)
			p.h.mon.mu.Unlock()
		}
		l.exists, l.up, l.ll, l.m, l.o = false, false, false, false, false
		// The server keeps its bindings: the agent owes their
		// deregistration until a link of that name is back (linkGone).
		p.send(netmon.LinkRemoved, l, netmon.Addr{})
	case 18: // the host is renamed (Config.HostNames)
		name := []string{"", "host", "host.example.com"}[p.c.intn(3)]
		p.logf("host name %q", name)
		p.h.deliver(evHostName{name})
	case 17: // renamed to a name the agent is told to leave alone, and back
		if !l.exists || l.up {
			return // Linux renames only a down interface
		}
		orig := l.name
		l.name = propExcluded
		p.send(netmon.LinkRenamed, l, netmon.Addr{})
		l.name = orig
		p.send(netmon.LinkRenamed, l, netmon.Addr{})
	default: // more time passes, in small steps
		p.advance(time.Duration(1+p.c.intn(3000)) * time.Millisecond)
	}
}

func (p *propRun) anyAddr(l *propLink) netip.Addr {
	ips := p.sortedAddrs(l)
	return ips[p.c.intn(len(ips))]
}

func (p *propRun) sortedAddrs(l *propLink) []netip.Addr {
	ips := make([]netip.Addr, 0, len(l.addrs))
	for ip := range l.addrs {
		ips = append(ips, ip)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	return ips
}

// advance moves time by d, the kernel removing addresses as they expire.
func (p *propRun) advance(d time.Duration) {
	p.logf("advance %v", d)
	end := p.h.clk.Now().Add(d)
	for {
		var first netip.Addr
		var at time.Time
		for _, l := range p.links {
			for ip, a := range l.addrs {
				if a.Valid == netmon.Infinite {
					continue
				}
				exp := a.Observed.Add(a.Valid)
				if at.IsZero() || exp.Before(at) || exp.Equal(at) && ip.Less(first) {
					first, at = ip, exp
				}
			}
		}
		if at.IsZero() || at.After(end) {
			break
		}
		p.h.advanceTo(at)
		p.fold()
		p.checkInvariants()
		p.delAddr(p.owner[first], first)
		p.fold()
		p.checkInvariants()
	}
	p.h.advanceTo(end)
}

// releaseOne ends one hanging exchange, with a reply or without.
func (p *propRun) releaseOne() {
	gens := make([]int, 0, len(p.h.xB))
	for g := range p.h.xB {
		gens = append(gens, g)
	}
	if len(gens) == 0 {
		return
	}
	slices.Sort(gens)
	g := gens[p.c.intn(len(gens))]
	x := p.h.xB[g]
	delete(p.h.xB, g)
	r := evResult{k: x.k, gen: x.gen, dereg: x.dereg}
	if x.dereg {
		if p.c.intn(3) == 0 {
			r.err = errRefused
		} else {
			r.res = registrar.Result{Sends: 1}
			p.h.reg.mu.Lock()
			p.late[len(p.h.reg.sends)] = true
			p.h.reg.sends = append(p.h.reg.sends, sent{addr: x.k.addr, deregistered: true, at: p.h.clk.Now(), fqdn: x.fqdn})
			p.h.reg.mu.Unlock()
		}
	} else {
		pref, valid, ok := p.h.ag.target(x).Lifetimes()
		switch {
		case !ok:
			r.err = registrar.ErrAddressGone
		case p.c.intn(2) == 0:
			r.res = registrar.Result{Replied: true, Sends: 2, Preferred: pref, Valid: valid, LastSent: p.h.clk.Now()}
			p.h.reg.mu.Lock()
			p.late[len(p.h.reg.sends)] = true
			p.h.reg.sends = append(p.h.reg.sends, sent{addr: x.k.addr, pref: pref, valid: valid, at: p.h.clk.Now(), fqdn: x.fqdn})
			p.h.reg.mu.Unlock()
		default:
			r.res, r.err = registrar.Result{Sends: 3}, registrar.ErrExchangeFailed
		}
	}
	p.logf("release exchange %v dereg=%t err=%v", x.k, x.dereg, r.err)
	p.h.deliver(r)
}

func (p *propRun) releaseProbe() {
	for g, pr := range p.h.probesB {
		delete(p.h.probesB, g)
		ok, err, _ := p.h.reg.probe(pr.from)
		p.logf("release probe %s ok=%t err=%v", pr.ifname, ok, err)
		p.h.deliver(evProbe{ifindex: pr.ifindex, gen: pr.gen, supported: ok, err: err})
		return
	}
}

// fold applies the sends since the last call to the model server.
func (p *propRun) fold() {
	_, sends := p.h.reg.snapshot()
	for i, s := range sends[p.seen:] {
		l := p.owner[s.addr]
		if !s.deregistered && !p.late[p.seen+i] {
			// RFC 9686 §4.1: an INFORM only on a link that is up and,
			// with RequireRAFlags, has an RA with M or O in effect.
			if !l.up || p.cfg.RequireRAFlags && !l.m && !l.o {
				p.fail("%s registered on %s: up=%t M=%t O=%t", s.addr, l.name, l.up, l.m, l.o)
			}
			if _, ok := l.addrs[s.addr]; !ok {
				p.fail("%s registered on %s, where it is not assigned", s.addr, l.name)
			}
		}
		if s.deregistered && !p.late[p.seen+i] && !p.h.m.stopping {
			// RFC 9686 §4.7: only an address that left; one re-added
			// (a replug, a link back up) within the grace is not.
			if _, ok := l.addrs[s.addr]; ok {
				p.fail("%s deregistered on %s, where it is assigned", s.addr, l.name)
			}
		}
		// The server counts the lifetimes from the send.
		switch {
		case s.deregistered || s.valid == 0:
			delete(p.server, s.addr)
		case s.valid == netmon.Infinite:
			p.server[s.addr] = binding{ifindex: l.index, since: s.at, name: s.fqdn}
		default:
			p.server[s.addr] = binding{ifindex: l.index, since: s.at, expires: s.at.Add(s.valid), name: s.fqdn}
		}
	}
	p.seen = len(sends)
	for ip, b := range p.server {
		if !b.expires.IsZero() && !b.expires.After(p.h.clk.Now()) {
			delete(p.server, ip)
		}
	}
}

func (p *propRun) checkInvariants() {
	p.t.Helper()
	h, m := p.h, p.h.m
	now := h.clk.Now()
	if len(h.results) != 0 {
		p.fail("harness: %d results not fed back", len(h.results))
	}
	// What the machine does not recompute: the state file, once its
	// debounce has passed, is the snapshot of now (a step it judged to
	// change nothing the file shows must not have changed it), from the
	// first save on; the heartbeat's kept counts are today's.
	if m.cfg.StatePath != "" && m.saved && m.saveAt.IsZero() && !m.stopping {
		if snap := m.snapshot(); hashSnapshot(snap) != m.savedHash {
			p.fail("state file: the snapshot %v is not the last saved, and no save is due", snap)
		}
	}
	if m.summary != nil && *m.summary != m.summarize() {
		p.fail("kept summary %v, counted %v", *m.summary, m.summarize())
	}
	// The timer.
	if w := m.wake(); !w.Equal(h.timerAt) {
		p.fail("timer armed for %v, machine's earliest wake-up %v", h.timerAt, w)
	} else if !w.IsZero() && !w.After(now) {
		p.fail("wake-up %v is not in the future (now %v)", w, now)
	}
	// The queue.
	if len(m.queue.keys) != len(m.queue.in) {
		p.fail("queue has %d keys, queued set %d", len(m.queue.keys), len(m.queue.in))
	}
	for i, k := range m.queue.keys {
		if !m.queue.has(k) || slices.Index(m.queue.keys, k) != i {
			p.fail("queue key %v duplicated or not in the set", k)
		}
	}
	// In flight: at most one exchange per address, never a registration
	// racing a deregistration of the same address on the wire.
	if m.inflight != len(h.xB) {
		p.fail("in flight %d, exchanges running %d", m.inflight, len(h.xB))
	}
	regs, deregs := map[key]int{}, map[key]int{}
	for _, x := range h.xB {
		if x.dereg {
			deregs[x.k]++
		} else {
			regs[x.k]++
		}
	}
	for k, n := range regs {
		if n > 1 || deregs[k] > 0 {
			p.fail("%v: %d registrations and %d deregistrations in flight at once", k, n, deregs[k])
		}
	}
	_ = m.report(nil)
	for _, l := range p.links {
		ifc, ok := m.ifaces[l.index]
		followed := ok && l.exists && ifc.name == l.name && m.wanted(l.name)
		if followed {
			// Nothing lost: the machine knows every registrable address.
			for ip, a := range l.addrs {
				if _, known := ifc.addrs[ip]; a.Registrable && !known {
					p.fail("%s: registrable address %s unknown to the machine", l.name, ip)
				}
			}
		}
		if !ok {
			continue
		}
		for ip, ad := range ifc.addrs {
			k := key{ifc.index, ip}
			x, running := h.xB[ad.gen]
			if msg := ad.invalid(); msg != "" {
				p.fail("%v: invalid state (%v, %v, %v): %s", k, ad.last, ad.run, ad.hold, msg)
			}
			if ad.inFlight() != (ad.phase() == Registering) || ad.inFlight() != (running && !x.dereg && x.k == k) {
				p.fail("%v: running=%t phase=%v, exchange for its generation: %t", k, ad.inFlight(), ad.phase(), running)
			}
			if ad.run == pausedForRA && m.raAllows(ifc) {
				p.fail("%v: paused while the RA condition holds", k)
			}
			if !m.eligible(ifc, ad) {
				continue
			}
			_, due := m.deadlines.When(k)
			waiting := ad.inFlight() || m.queue.has(k) || due || ad.run == pausedForRA ||
				(ad.phase() == Pending && m.deregInFlight[k].count > 0) ||
				(ad.phase() == Registered && !ad.reg.Periodic())
			if !waiting {
				p.fail("%v (%v): eligible but nothing will ever happen to it", k, ad.phase())
			}
			if ad.phase() == Registered && ad.run != pausedForRA && !m.queue.has(k) {
				if ad.toldName != m.fqdn {
					p.fail("%v: registered with host name %q, the host's is %q, and no exchange is coming", k, ad.toldName, m.fqdn)
				}
				if b, ok := p.server[ip]; ok && !b.excused && b.ifindex == l.index && b.name != ad.toldName {
					p.fail("%v: the server's binding carries the name %q, the machine believes %q", k, b.name, ad.toldName)
				}
			}
			if ad.phase() == Registered && !ad.reg.Periodic() && ad.run != pausedForRA && !m.queue.has(k) {
				_, valid := ad.cur.Remaining(now)
				if at, refresh := m.cfg.Policy.LifetimeChanged(ad.reg, now, valid, static(ad.cur)); refresh {
					if when, ok := m.deadlines.When(k); !ok || when.After(at) {
						p.fail("%v: valid %v, server told %v at %v: refresh due by %v, scheduled %v (%t)",
							k, valid, ad.reg.Valid, ad.reg.At.Sub(t0), at.Sub(t0), when.Sub(t0), ok)
					}
				}
			}
		}
	}
	for name, list := range m.stale.byIface {
		for _, sa := range list {
			if sa.expired(now) {
				p.fail("%s %s: waits for its link after its binding ran out (%v)", name, sa.Addr, sa.At.Add(time.Duration(sa.Valid)*time.Second).Sub(t0))
			}
		}
	}
	for _, ifc := range m.ifaces {
		if msg := ifc.disc.invalid(); msg != "" {
			p.fail("%s: invalid discovery state %+v: %s", ifc.name, ifc.disc, msg)
		}
		if ifc.up && ifc.disc.state() == IfSupported && len(m.stale.of(ifc.name)) > 0 {
			p.fail("%s: supported, and %d deregistrations still wait for the link", ifc.name, len(m.stale.of(ifc.name)))
		}
	}
	for k := range m.deregDue {
		if ifc, ok := m.ifaces[k.ifindex]; ok && !ifc.up {
			// A deregistration that waits for its link is a stale
			// address in the snapshot (waitForLink), not owed.
			p.fail("%v: deregistration owed on a link that is down", k)
		}
		if _, due := m.deadlines.When(k); !due && !m.queue.has(k) {
			p.fail("%v: deregistration owed but neither queued nor due", k)
		}
	}
	// The server's bindings for addresses gone from their link, whether
	// the link is up, down (removed while it is down, the deregistration
	// waits for it) or removed (it waits for a link of that name): owed,
	// in flight, or at least remembered.
	var snap map[netip.Addr]bool
	for ip, b := range p.server {
		l := p.owner[ip]
		if _, assigned := l.addrs[ip]; (assigned && b.ifindex == l.index) || b.excused {
			continue
		}
		if snap == nil {
			snap = map[netip.Addr]bool{}
			for _, sa := range m.snapshot() {
				snap[sa.Addr] = true
			}
		}
		if !p.tracked(ip) && !snap[ip] {
			p.fail("%s: the server holds it (sent at %v on index %d), it is gone, and the machine forgot it", ip, b.since.Sub(t0), b.ifindex)
		}
	}
}

// tracked reports whether a deregistration of ip is owed or in flight, on
// any link.
func (p *propRun) tracked(ip netip.Addr) bool {
	for k := range p.h.m.deregDue {
		if k.addr == ip {
			return true
		}
	}
	for k, d := range p.h.m.deregInFlight {
		if k.addr == ip && d.count > 0 {
			return true
		}
	}
	return false
}

// finish stops the machine and checks that what the server still holds is
// in the last snapshot (a restart deregisters it, or registers it again).
func (p *propRun) finish() {
	p.logf("stop")
	p.h.deliver(evStop{})
	if p.c.intn(2) == 0 {
		p.releaseOne()
	}
	if !p.h.m.stopped() {
		p.h.deliver(evAbandon{})
	}
	p.fold()
	snap := p.h.m.snapshot()
	p.h.stopped = true
	for ip, b := range p.server {
		if b.excused {
			continue
		}
		if !slices.ContainsFunc(snap, func(sa savedAddr) bool { return sa.Addr == ip }) {
			p.fail("after the stop: the server holds %s (sent at %v), the state file does not", ip, b.since.Sub(t0))
		}
	}
}

func (p *propRun) run(steps int) {
	for range steps {
		p.step()
		p.fold()
		p.checkInvariants()
	}
	p.finish()
}

func TestMachineProperties(t *testing.T) {
	runs, steps := 1000, 400
	if testing.Short() {
		runs, steps = 40, 300
	}
	for seed := range uint64(runs) {
		ok := t.Run(fmt.Sprint(seed), func(t *testing.T) {
			p := newPropRun(t, prngChooser{mrand.New(mrand.NewPCG(seed, 0x5eed))})
			p.run(steps)
		})
		if !ok {
			return // the first failure is enough to read
		}
	}
}

func FuzzMachine(f *testing.F) {
	for seed := range uint64(8) {
		r := mrand.New(mrand.NewPCG(seed, 1))
		b := make([]byte, 256)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c := &byteChooser{b: b}
		p := newPropRun(t, c)
		for !c.done() {
			p.step()
			p.fold()
			p.checkInvariants()
		}
		p.finish()
	})
}
