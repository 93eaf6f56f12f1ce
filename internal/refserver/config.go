package refserver

import (
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/addrreg/addrreg/scheduler"
)

// DefaultDBPath is where the command keeps its database unless told otherwise.
const DefaultDBPath = "/var/lib/addrreg-refserver/bindings.db"

// Config configures a Server.
type Config struct {
	// Interfaces to listen on: [::]:547 joins ff02::1:2 on each. Unrelayed
	// messages are accepted only from these; relayed ones from anywhere.
	Interfaces []string
	// Prefixes that are "appropriate to the link", keyed by interface name
	// (unrelayed) or by a relay's link-address as a string (relayed). An
	// interface without an entry uses the global prefixes of its own
	// addresses; a relay link-address without an entry uses the entry whose
	// prefix contains it, else its /64.
	Prefixes map[string][]netip.Prefix
	// AddrReg offers OPTION_ADDR_REG_ENABLE (148) in Replies to clients that
	// ask for it. The command defaults it to true (--no-addr-reg turns it
	// off); a zero Config has it false, so library users set it, or start
	// from DefaultConfig.
	AddrReg bool
	// DBPath is the database: an SQLite file (created if missing; an
	// old-format database there is imported once and kept in
	// DBPath+OldFormatSuffix), or a PostgreSQL URL (postgres://…) that
	// several servers may share.
	DBPath string
	// DBPasswordFile holds the PostgreSQL password (one line), so that it
	// is not on the command line; pgx's environment (PGPASSWORD,
	// PGPASSFILE) works too.
	DBPasswordFile string
	// LeasequeryAllow lists the requestors allowed to leasequery; nil allows
	// only loopback (::1).
	LeasequeryAllow []netip.Prefix
	// RatePerSource and RatePerDUID are token-bucket rates in messages per
	// second (0: unlimited); Burst is the bucket size for both (0: 2×rate, at least 1).
	RatePerSource, RatePerDUID float64
	Burst                      int
	Logger                     *slog.Logger    // nil: slog.Default()
	Clock                      scheduler.Clock // nil: scheduler.RealClock()
	// MaxBindingsPerDUID bounds how many addresses one client (DUID) may
	// hold (RFC 9686 §8 lets a server limit registrations per client); a
	// container host can hold thousands. 0: DefaultMaxBindingsPerDUID.
	MaxBindingsPerDUID int
	// MaxQueue is how many messages may wait for their commit; above it the
	// server drops what arrives (counter "overloaded") rather than let
	// latency grow. 0: DefaultMaxQueue.
	MaxQueue int
	// MaxWait is how long a message may wait in the socket's receive
	// queue (from the kernel's receive timestamp to being read); one that
	// waited longer is dropped unhandled and counted as "overloaded": when
	// the server falls behind, it sheds the oldest work first and keeps the
	// latency of what it answers bounded. 0: DefaultMaxWait; negative: no limit.
	MaxWait time.Duration
	// Readers is how many goroutines read and handle datagrams (recvmmsg
	// batches), all feeding the one group-commit writer. 0: one per CPU, at most 4.
	Readers int
	// NoLog turns off the per-registration log lines (RFC 9686 §4.2.1 "unless
	// configured not to do so"); rejects and errors are still logged.
	NoLog bool
	// HistoryMax is how many history records the database keeps (0:
	// DefaultHistoryMax); HistoryMaxAge drops records older than that
	// (0: no age limit). Both prune as new records are written.
	HistoryMax    uint64
	HistoryMaxAge time.Duration
	// OnCommit, if set, is called with the events committed (the binding
	// changes — register, refresh, move, deregister, expire — and the
	// rejects kept in the history), in order, from the one goroutine that
	// commits them, after each successful commit (expiries included,
	// those of bindings found expired at start too), until Run returns.
	// It must not block, nor keep evs: the DNS updater (internal/ddns)
	// copies what it needs into its own queue. Expiries come first: a
	// binding found expired by a registration of its address is handed
	// on before that registration.
	OnCommit func(evs []Event)
	// DNSJournal, if set, is the DNS updater's journal (OpenDNSJournal):
	// each commit writes the DNS changes of its events (DNSChange) to it
	// in the same transaction, numbered in Event.DNSSeq, so that a crash
	// before the updater has journaled them loses none.
	DNSJournal *DNSJournal
}

// DefaultConfig returns the command's defaults: registration offered, the
// default database path, 20 messages/s per source, 100/s per DUID, burst 200.
func DefaultConfig() Config {
	return Config{AddrReg: true, DBPath: DefaultDBPath, RatePerSource: 20, RatePerDUID: 100, Burst: 200}
}

// Binding is one registered address.
type Binding struct {
	DUID      []byte           `json:"duid"`
	Addr      netip.Addr       `json:"addr"`
	Iface     string           `json:"iface"`               // interface the message arrived on
	LinkAddr  netip.Addr       `json:"link_addr,omitzero"`  // innermost relay's link-address; invalid when unrelayed
	LinkLayer net.HardwareAddr `json:"link_layer,omitzero"` // from option 79 (RFC 6939), when a relay supplied it
	FQDN      string           `json:"fqdn,omitempty"`
	First     time.Time        `json:"first"`   // first registered (by this DUID)
	Last      time.Time        `json:"last"`    // last refreshed
	Expires   time.Time        `json:"expires"` // zero: never (infinite valid lifetime)
	Preferred time.Duration    `json:"preferred"`
	Valid     time.Duration    `json:"valid"`
}

// expired reports whether b has expired at now.
func (b *Binding) expired(now time.Time) bool {
	return !b.Expires.IsZero() && !now.Before(b.Expires)
}
