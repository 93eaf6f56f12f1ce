package netmon

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// watchRAs listens for RAs on every interface of the namespace with one raw
// ICMPv6 socket bound to :: (RAs go to ff02::1, which every interface has
// joined) and records their M/O flags and PIOs. The kernel delivers ICMPv6 to
// raw sockets whether or not it processes RAs itself (accept_ra = 0).
func (m *Monitor) watchRAs(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := m.listenRAs(ctx)
		if ctx.Err() != nil {
			return
		}
		if isFatal(err) {
			// No CAP_NET_RAW: the kernel's flags are all there is.
			m.log.Error("RA listener stopped", "err", err)
			return
		}
		m.log.Warn("RA listener failed", "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (m *Monitor) listenRAs(ctx context.Context) error {
	var c *icmp.PacketConn
	err := inNetns(m.o.Netns, func() error {
		var err error
		c, err = icmp.ListenPacket("ip6:ipv6-icmp", "::")
		return err
	})
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer func() {
		if stop() {
			c.Close()
		}
	}()
	pc := c.IPv6PacketConn()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterAdvertisement)
	if err := pc.SetICMPFilter(&f); err != nil {
		return err
	}
	if err := pc.SetControlMessage(ipv6.FlagInterface|ipv6.FlagHopLimit, true); err != nil {
		return err
	}
	b := make([]byte, 1<<16)
	for {
		n, cm, src, err := pc.ReadFrom(b)
		if err != nil {
			return err
		}
		if cm == nil || cm.HopLimit != ndp.HopLimit {
			continue // RFC 4861 §6.1.2: not from the link
		}
		msg, err := ndp.ParseMessage(b[:n])
		if err != nil {
			continue
		}
		ra, ok := msg.(*ndp.RouterAdvertisement)
		if !ok {
			continue
		}
		ip, _ := netip.AddrFromSlice(src.(*net.IPAddr).IP)
		m.wireRA(cm.IfIndex, ip, ra)
	}
}

func (m *Monitor) wireRA(index int, src netip.Addr, ra *ndp.RouterAdvertisement) {
	now := m.o.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st.setWire(index, src, raFlags{managed: ra.ManagedConfiguration, other: ra.OtherConfiguration}, now)
	for _, o := range ra.Options {
		pi, ok := o.(*ndp.PrefixInformation)
		if !ok {
			continue
		}
		p, err := pi.Prefix.Prefix(int(pi.PrefixLength))
		if err != nil {
			continue
		}
		m.st.setPrefix(Prefix{
			Index: index, Prefix: p,
			Preferred: ndpLifetime(pi.PreferredLifetime), Valid: ndpLifetime(pi.ValidLifetime),
			OnLink: pi.OnLink, Autonomous: pi.AutonomousAddressConfiguration,
		}, now, false)
	}
}

func ndpLifetime(d time.Duration) time.Duration {
	if d == ndp.Infinity {
		return Infinite
	}
	return d
}
