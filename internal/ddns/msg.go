package ddns

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// The update messages (RFC 2136), built as pure functions of what they
// change. The conflict rule is RFC 4703's (§5.3.1, §5.3.2, §5.5) for
// AAAA records, except that a name may hold several addresses (a host's
// stable, temporary and ULA addresses): an update adds or removes one
// AAAA RR, never replaces the RRset.

// dhcid returns the DHCID RR for name registered by duid (RFC 4701 §3.3:
// identifier type 2, DUID; digest type 1, SHA-256 over the DUID and the
// name in canonical wire format).
func dhcid(name string, duid []byte, ttl uint32) *dns.DHCID {
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(dns.CanonicalName(name), buf, 0, nil, false)
	if err != nil {
		n = 0 // the name was checked before; never here
	}
	h := sha256.New()
	h.Write(duid)
	h.Write(buf[:n])
	rdata := binary.BigEndian.AppendUint16(nil, 2) // identifier type: DUID
	rdata = append(rdata, 1)                       // digest type: SHA-256
	rdata = h.Sum(rdata)
	return &dns.DHCID{Hdr: hdr(name, dns.TypeDHCID, ttl), Digest: base64.StdEncoding.EncodeToString(rdata)}
}

func hdr(name string, t uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}

func aaaa(name string, a netip.Addr, ttl uint32) *dns.AAAA {
	return &dns.AAAA{Hdr: hdr(name, dns.TypeAAAA, ttl), AAAA: net.IP(a.AsSlice())}
}

// addNew adds name's first address: only if the name does not exist
// (RFC 4703 §5.3.1), with the DHCID that marks it as this client's.
func addNew(zone string, o Owner, a netip.Addr) *dns.Msg {
	m := new(dns.Msg)
	m.SetUpdate(zone)
	m.NameNotUsed([]dns.RR{&dns.ANY{Hdr: hdr(o.Name, dns.TypeANY, 0)}})
	m.Insert([]dns.RR{aaaa(o.Name, a, o.TTL), dhcid(o.Name, o.DUID, o.TTL)})
	return m
}

// addMine adds an address to a name that exists, only if its DHCID is this
// client's (RFC 4703 §5.3.2): a name held by another client, or a name
// without a DHCID (entered by hand), is not taken.
func addMine(zone string, o Owner, a netip.Addr) *dns.Msg {
	m := new(dns.Msg)
	m.SetUpdate(zone)
	m.Used([]dns.RR{dhcid(o.Name, o.DUID, 0)})
	m.Insert([]dns.RR{aaaa(o.Name, a, o.TTL)})
	return m
}

// removeAddr removes the address from the name if the name is this
// client's (RFC 4703 §5.5, first update).
func removeAddr(zone string, o Owner, a netip.Addr) *dns.Msg {
	m := new(dns.Msg)
	m.SetUpdate(zone)
	m.Used([]dns.RR{dhcid(o.Name, o.DUID, 0)})
	m.Remove([]dns.RR{aaaa(o.Name, a, 0)})
	return m
}

// removeDHCID removes the client's DHCID once the name has no address
// left (RFC 4703 §5.5, second update).
func removeDHCID(zone string, o Owner) *dns.Msg {
	m := new(dns.Msg)
	m.SetUpdate(zone)
	m.Used([]dns.RR{dhcid(o.Name, o.DUID, 0)})
	m.RRsetNotUsed([]dns.RR{
		&dns.ANY{Hdr: hdr(o.Name, dns.TypeAAAA, 0)},
		&dns.ANY{Hdr: hdr(o.Name, dns.TypeA, 0)},
	})
	m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: hdr(o.Name, dns.TypeDHCID, 0)}})
	return m
}

// setPTR replaces the address's PTR RRset with one pointing to name.
func setPTR(zone, rev, name string, ttl uint32) *dns.Msg {
	m := new(dns.Msg)
	m.SetUpdate(zone)
	m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: hdr(rev, dns.TypePTR, 0)}})
	m.Insert([]dns.RR{&dns.PTR{Hdr: hdr(rev, dns.TypePTR, ttl), Ptr: name}})
	return m
}

// deletePTR removes the address's PTR RRset.
func deletePTR(zone, rev string) *dns.Msg {
	m := new(dns.Msg)
	m.SetUpdate(zone)
	m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: hdr(rev, dns.TypePTR, 0)}})
	return m
}

// reverseName is the address's ip6.arpa name (RFC 3596 §2.5).
func reverseName(a netip.Addr) string {
	r, _ := dns.ReverseAddr(a.String())
	return r
}

// zoneOf returns the longest of zones that contains name ("" if none).
func zoneOf(zones []string, name string) string {
	best := ""
	for _, z := range zones {
		if dns.IsSubDomain(z, name) && len(z) > len(best) {
			best = z
		}
	}
	return best
}

// CheckZone returns z as a canonical FQDN, or an error if it is not a
// domain name.
func CheckZone(z string) (string, error) {
	if _, ok := dns.IsDomainName(z); !ok || z == "" || z == "." {
		return "", fmt.Errorf("zone %q: not a domain name", z)
	}
	return dns.CanonicalName(z), nil
}

// CheckReverseZone is CheckZone for a zone under ip6.arpa.
func CheckReverseZone(z string) (string, error) {
	c, err := CheckZone(z)
	if err != nil {
		return "", err
	}
	if !dns.IsSubDomain("ip6.arpa.", c) {
		return "", fmt.Errorf("zone %q: not under ip6.arpa", z)
	}
	return c, nil
}

// qualify returns the name a client asked for as a canonical FQDN in one
// of the forward zones, and the zone; "" when it is in none, or is not a
// host name. A single label (a partial name, RFC 4704 §4.1) is put in the
// first forward zone.
func qualify(zones []string, name string) (fqdn, zone string) {
	name = strings.TrimSpace(name)
	if name == "" || len(zones) == 0 {
		return "", ""
	}
	if !strings.Contains(strings.TrimSuffix(name, "."), ".") {
		name = strings.TrimSuffix(name, ".") + "." + zones[0]
	}
	if !hostName(name) {
		return "", ""
	}
	name = dns.CanonicalName(name)
	z := zoneOf(zones, name)
	if z == "" || z == name {
		return "", "" // outside, or the zone's apex: never a host's
	}
	return name, z
}

// hostName reports whether s is a name made of letters, digits, hyphens
// and dots (RFC 952, RFC 1123 §2.1), within DNS's limits: what a client
// may put in DNS here.
func hostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
