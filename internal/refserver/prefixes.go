package refserver

import (
	"net"
	"net/netip"
	"time"
)

func (s *Server) ifName(idx int) string {
	s.ifmu.Lock()
	defer s.ifmu.Unlock()
	if n, ok := s.ifNames[idx]; ok {
		return n
	}
	name := ""
	if ifi, err := net.InterfaceByIndex(idx); err == nil {
		name = ifi.Name
	}
	s.ifNames[idx] = name
	return name
}

// ifacePrefixes returns the global prefixes of an interface's own
// addresses, cached for a second.
func (s *Server) ifacePrefixes(name string) []netip.Prefix {
	now := time.Now()
	s.ifmu.Lock()
	e, ok := s.onLink[name]
	s.ifmu.Unlock()
	if ok && now.Sub(e.at) < time.Second {
		return e.prefixes
	}
	var ps []netip.Prefix
	if ifi, err := net.InterfaceByName(name); err == nil {
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, _ := netip.AddrFromSlice(ipn.IP)
			ones, bits := ipn.Mask.Size()
			if bits != 128 || !ip.Is6() || ip.Is4In6() || !ip.IsGlobalUnicast() {
				continue
			}
			if ones == 128 {
				ones = 64 // a /128 (nodad host address) stands for its /64 link
			}
			p, _ := ip.Prefix(ones)
			ps = append(ps, p)
		}
	}
	s.ifmu.Lock()
	s.onLink[name] = onLinkEntry{prefixes: ps, at: now}
	s.ifmu.Unlock()
	return ps
}

type onLinkEntry struct {
	prefixes []netip.Prefix
	at       time.Time
}
