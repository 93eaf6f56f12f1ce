package ddns

import (
	"bytes"
	"net/netip"
	"slices"
	"time"
)

// Change is what happened to one address's binding, as the server tells
// it: the name it now has (none when the binding is gone) and the name it
// had before, each with the client (DUID) that registered it.
type Change struct {
	Addr netip.Addr
	// Name and DUID: the registration now held ("" when the binding was
	// deregistered or expired, or carries no name).
	Name string
	DUID []byte
	// Valid is the binding's valid lifetime (for the records' TTL); 0 or
	// negative: infinite.
	Valid time.Duration
	// PrevName and PrevDUID: the name published for the address before
	// (the binding's previous FQDN and holder), "" if none.
	PrevName string
	PrevDUID []byte
	// Seq, when not 0, is the change's number in the Journal (which the
	// server wrote it to when it committed it); see Journal.
	Seq int64
}

// Owner is a name as registered by one client.
type Owner struct {
	Name string `json:"name"`
	DUID []byte `json:"duid"`
	TTL  uint32 `json:"ttl,omitempty"`
}

func (o Owner) same(p Owner) bool { return o.Name == p.Name && bytes.Equal(o.DUID, p.DUID) }

// Pending is the DNS work left for one address: the records to remove
// (the address's AAAA under each Drop name, with its DHCID when no
// address is left there) and the records it should have (AAAA under
// Want.Name and a PTR to it; none when Want is nil: the PTR goes too).
// Every step is idempotent, so a Pending is simply done again after a
// failure or a restart.
type Pending struct {
	Addr netip.Addr `json:"addr"`
	Want *Owner     `json:"want,omitempty"`
	Drop []Owner    `json:"drop,omitempty"`
	// Since is when the oldest change merged into it arrived.
	Since time.Time `json:"since"`
}

// merge folds c into p (which may be the zero Pending for c.Addr):
// per-address coalescing. The names to remove accumulate; the wanted
// state is the latest. The zones decide nothing here (see Updater).
func merge(p Pending, c Change, ttl uint32, now time.Time) Pending {
	if !p.Addr.IsValid() {
		p.Addr, p.Since = c.Addr, now
	}
	p.Drop = slices.Clone(p.Drop)
	drop := func(o Owner) {
		if o.Name == "" || slices.ContainsFunc(p.Drop, o.same) {
			return
		}
		p.Drop = append(p.Drop, Owner{Name: o.Name, DUID: bytes.Clone(o.DUID)})
	}
	if c.PrevName != "" {
		drop(Owner{Name: c.PrevName, DUID: c.PrevDUID})
	}
	var want *Owner
	if c.Name != "" {
		want = &Owner{Name: c.Name, DUID: bytes.Clone(c.DUID), TTL: ttl}
	}
	// What an earlier change wanted may have been sent in part.
	if p.Want != nil && (want == nil || !p.Want.same(*want)) {
		drop(*p.Want)
	}
	p.Want = want
	if want != nil {
		p.Drop = slices.DeleteFunc(p.Drop, want.same)
	}
	if len(p.Drop) == 0 {
		p.Drop = nil
	}
	return p
}

// ttlFor is the TTL of records for a binding valid for valid: cfg.TTL if
// set, else a third of the lifetime (so a resolver does not keep an
// address long after it has gone) between MinTTL and MaxTTL.
func ttlFor(fixed, valid time.Duration) uint32 {
	if fixed > 0 {
		return uint32(fixed / time.Second)
	}
	if valid <= 0 {
		return uint32(MaxTTL / time.Second)
	}
	return uint32(min(max(valid/3, MinTTL), MaxTTL) / time.Second)
}

// The bounds of the lifetime-derived TTL.
const (
	MinTTL = 10 * time.Second
	MaxTTL = time.Hour
)
