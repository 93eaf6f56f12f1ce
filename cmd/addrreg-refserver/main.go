// Command addrreg-refserver is the reference DHCPv6 address-registration
// server (RFC 9686) with RFC 5007 leasequery, and its leasequery requestor.
//
//	addrreg-refserver -i eth0 [--prefix eth0=2001:db8:1::/64] [--db PATH] …
//	addrreg-refserver --check -i eth0 [--config FILE] …
//	addrreg-refserver query --address 2001:db8:1::10 [--server ADDR] [--json]
//	addrreg-refserver query --client-id 000100…      [--server ADDR] [--json] [--bulk]
//	addrreg-refserver query --bulk --link-address 2001:db8:2::1 [--server ADDR] [--json]
//	addrreg-refserver history --address 2001:db8:1::10 [--at TIME] [--json]
//	addrreg-refserver history --client-id 000100… [--since T] [--until T]
//
// query asks over UDP (RFC 5007) and, when the answer is too large for a
// datagram or --bulk is given, over TCP (Bulk Leasequery, RFC 5460).
//
// Exit status: 0 on success and after SIGTERM/SIGINT (and for --check,
// --help, --version), 1 on a runtime failure, 2 on a bad flag or
// configuration (--check: one it rejects).
//
// Its interface is the command line (flags, output, exit status), not Go:
// the packages it is built from are listed with their status in README.md.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/addrreg/addrreg/internal/daemonlog"
	"github.com/addrreg/addrreg/internal/ddns"
	"github.com/addrreg/addrreg/internal/metricserver"
	"github.com/addrreg/addrreg/internal/refserver"
)

// version is set by the Makefile with -ldflags -X main.version=….
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is a bad flag or configuration: exit 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func run(args []string, stdout, stderr io.Writer) int {
	var err error
	switch {
	case len(args) > 0 && args[0] == "query":
		err = runQuery(args[1:], stdout, stderr)
	case len(args) > 0 && args[0] == "history":
		err = runHistory(args[1:], stdout, stderr)
	default:
		err = runServer(args, stdout, stderr)
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "addrreg-refserver: %v\nRun 'addrreg-refserver --help' for usage.\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "addrreg-refserver: %v\n", err)
		return 1
	}
}

// fileConfig is the --config file (JSON). Flags given on the command line
// override it.
type fileConfig struct {
	Interfaces      []string            `json:"interfaces"`
	Prefixes        map[string][]string `json:"prefixes"` // iface or relay link-address → prefixes
	AddrReg         *bool               `json:"addr_reg"`
	DB              string              `json:"db"`
	DBPasswordFile  string              `json:"db_password_file"`
	LeasequeryAllow []string            `json:"leasequery_allow"`
	Rate            *float64            `json:"rate"`
	RateDUID        *float64            `json:"rate_duid"`
	Burst           *int                `json:"burst"`
	MaxPerDUID      *int                `json:"max_bindings_per_duid"`
	Queue           *int                `json:"queue"`
	MaxWait         string              `json:"max_wait"`
	LogFormat       string              `json:"log_format"`
	LogLevel        string              `json:"log_level"`
}

func runServer(args []string, stdout, stderr io.Writer) error {
	cfg, ops, err := serverConfig(args, stdout, stderr)
	if err != nil {
		return err
	}
	if ops.showVersion {
		fmt.Fprintf(stdout, "addrreg-refserver %s\n", version)
		return nil
	}
	if ops.check {
		fmt.Fprintf(stdout, "addrreg-refserver: configuration OK: interfaces %s, db %s, address registration %t, DNS updates %t\n",
			strings.Join(cfg.Interfaces, ","), refserver.RedactDB(cfg.DBPath), cfg.AddrReg, ops.ddns != nil)
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if ops.ddns != nil {
		ops.ddns.Logger = cfg.Logger.With("part", "ddns")
		if ops.ddns.Journal == nil {
			// The database, opened (and migrated) before the server
			// opens it, closed after the updater has written it last.
			j, err := openDNSJournal(ctx, cfg)
			if err != nil {
				cfg.Logger.Error("server failed", "err", err)
				return err
			}
			defer j.Close()
			ops.ddns.Journal = j
			cfg.DNSJournal = j // commits write their DNS changes to it
		}
		if ops.updater, err = ddns.New(*ops.ddns); err != nil {
			return usageError{err}
		}
		cfg.OnCommit = enqueueEvents(ops.updater)
	}
	srv, err := refserver.New(cfg)
	if err != nil {
		return usageError{err}
	}
	if err := runWithOps(ctx, srv, ops, cfg.Logger); err != nil {
		cfg.Logger.Error("server failed", "err", err)
		return err
	}
	return nil
}

// serverConfig parses the server's flags and --config file.
// --help writes the synopsis and the flags to stdout; --version returns
// with ops.showVersion set and nothing else checked.
func serverConfig(args []string, stdout, stderr io.Writer) (refserver.Config, opsFlags, error) {
	var zero refserver.Config
	var ops opsFlags
	fs := pflag.NewFlagSet("addrreg-refserver", pflag.ContinueOnError)
	fs.SetOutput(stdout)
	def := refserver.DefaultConfig()
	ifaces := fs.StringArrayP("interface", "i", nil, "interface to listen on (repeatable)")
	prefixes := fs.StringArray("prefix", nil, "IFACE=PREFIX or RELAY-LINK-ADDRESS=PREFIX appropriate to that link (repeatable)")
	cfgFile := fs.String("config", "", "JSON configuration file (flags override it)")
	noAddrReg := fs.Bool("no-addr-reg", false, "do not offer address registration (option 148)")
	dbPath := fs.String("db", def.DBPath, "database: an SQLite file, or postgres://USER@HOST/DB?sslmode=… shared by several servers (password from --db-password-file or PGPASSWORD, not the URL)")
	dbPwFile := fs.String("db-password-file", "", "file holding the PostgreSQL password (one line)")
	lqAllow := fs.StringArray("leasequery-allow", nil, "prefix whose hosts may leasequery (repeatable; default ::1/128)")
	rate := fs.Float64("rate", def.RatePerSource, "messages per second allowed per source address (0: unlimited)")
	rateDUID := fs.Float64("rate-duid", def.RatePerDUID, "registrations per second allowed per DUID (0: unlimited)")
	burst := fs.Int("burst", def.Burst, "rate-limit bucket size")
	maxPerDUID := fs.Int("max-bindings-per-duid", refserver.DefaultMaxBindingsPerDUID,
		"most addresses one client (DUID) may register (RFC 9686 §8); a container host may need thousands")
	readers := fs.Int("readers", 0, "goroutines reading and handling datagrams, all feeding the one database writer (0: one per CPU, at most 4)")
	queue := fs.Int("queue", refserver.DefaultMaxQueue,
		"most registrations waiting for their database commit; above it messages are dropped (counter \"overloaded\")")
	maxWait := fs.Duration("max-wait", refserver.DefaultMaxWait,
		"a message that waited longer than this in the socket's receive queue is dropped unhandled (counter \"overloaded\"); 0: no limit")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	noLog := fs.Bool("no-registration-log", false, "do not log each registration (rejects are still logged)")
	histMax := fs.Uint64("history-max", refserver.DefaultHistoryMax, "history records kept (oldest pruned first)")
	histAge := fs.Duration("history-max-age", 0, "history records older than this are pruned (0: no age limit)")
	fs.StringVar(&ops.controlSocket, "control-socket", refserver.DefaultControlSocket, "unix socket (root only) that answers 'history' (empty: none)")
	dnsFlags := addDDNSFlags(fs)
	fs.BoolVar(&ops.check, "check", false, "check the flags and the --config file, print \"configuration OK\" and exit (0, or 2 and what is wrong); opens no socket and no database")
	fs.BoolVar(&ops.showVersion, "version", false, "print the version and exit")
	fs.StringVar(&ops.metricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. [::1]:9548, 127.0.0.1:9548 or :9548 (default: off)")
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: addrreg-refserver -i IFACE [flags]\n       addrreg-refserver --check -i IFACE [flags]\n       addrreg-refserver query --address A | --client-id HEX | --bulk --link-address L [--server ADDR] [--json] [--bulk]\n       addrreg-refserver history --address A [--at TIME] | --client-id HEX [--since T --until T] [--json]\n\n"+
			"The reference DHCPv6 address-registration server (RFC 9686) with leasequery (RFC 5007, 5460).\n"+
			"Exit status: 0; 1 on a runtime failure; 2 on a bad flag or configuration.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return zero, ops, err
		}
		return zero, ops, usageError{err}
	}
	if ops.showVersion {
		return zero, ops, nil
	}
	if fs.NArg() > 0 {
		return zero, ops, usagef("unexpected argument %q", fs.Arg(0))
	}

	var fc fileConfig
	if *cfgFile != "" {
		b, err := os.ReadFile(*cfgFile)
		if err != nil {
			return zero, ops, usagef("--config: %w", err)
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fc); err != nil {
			return zero, ops, usagef("--config %s: %w", *cfgFile, err)
		}
	}
	cfg := def
	cfg.Interfaces = fc.Interfaces
	if fs.Changed("interface") {
		cfg.Interfaces = *ifaces
	}

	if fc.AddrReg != nil {
		cfg.AddrReg = *fc.AddrReg
	}
	if *noAddrReg {
		cfg.AddrReg = false
	}
	if fc.DB != "" && !fs.Changed("db") {
		cfg.DBPath = fc.DB
	} else {
		cfg.DBPath = *dbPath
	}
	pick := func(name string, file *float64, flag float64) float64 {
		if file != nil && !fs.Changed(name) {
			return *file
		}
		return flag
	}
	cfg.RatePerSource = pick("rate", fc.Rate, *rate)
	cfg.RatePerDUID = pick("rate-duid", fc.RateDUID, *rateDUID)
	cfg.Burst = *burst
	if fc.Burst != nil && !fs.Changed("burst") {
		cfg.Burst = *fc.Burst
	}
	if cfg.RatePerSource < 0 || cfg.RatePerDUID < 0 {
		return zero, ops, usagef("--rate and --rate-duid must not be negative")
	}
	if cfg.Burst < 0 {
		return zero, ops, usagef("--burst must not be negative")
	}
	cfg.MaxBindingsPerDUID, cfg.MaxQueue = *maxPerDUID, *queue
	if fc.MaxPerDUID != nil && !fs.Changed("max-bindings-per-duid") {
		cfg.MaxBindingsPerDUID = *fc.MaxPerDUID
	}
	if fc.Queue != nil && !fs.Changed("queue") {
		cfg.MaxQueue = *fc.Queue
	}
	if cfg.MaxBindingsPerDUID < 1 {
		return zero, ops, usagef("invalid --max-bindings-per-duid %d: want 1 or more", cfg.MaxBindingsPerDUID)
	}
	if cfg.MaxQueue < 1 {
		return zero, ops, usagef("invalid --queue %d: want 1 or more", cfg.MaxQueue)
	}
	cfg.DBPasswordFile = *dbPwFile
	if fc.DBPasswordFile != "" && !fs.Changed("db-password-file") {
		cfg.DBPasswordFile = fc.DBPasswordFile
	}
	if r := refserver.RedactDB(cfg.DBPath); r != cfg.DBPath && strings.Contains(r, "xxxxx") {
		fmt.Fprintf(stderr, "addrreg-refserver: warning: the --db URL holds a password, which ps shows: use --db-password-file or PGPASSWORD\n")
	}
	cfg.MaxWait = *maxWait
	if fc.MaxWait != "" && !fs.Changed("max-wait") {
		var err error
		if cfg.MaxWait, err = time.ParseDuration(fc.MaxWait); err != nil {
			return zero, ops, usagef("invalid max_wait %q in the config file: %v", fc.MaxWait, err)
		}
	}
	switch {
	case cfg.MaxWait < 0:
		return zero, ops, usagef("invalid --max-wait %v: want 0 (no limit) or more", cfg.MaxWait)
	case cfg.MaxWait == 0:
		cfg.MaxWait = -1 // refserver.Config: negative is no limit
	}
	if cfg.Readers = *readers; cfg.Readers < 0 {
		return zero, ops, usagef("invalid --readers %d: want 0 or more", cfg.Readers)
	}
	cfg.NoLog = *noLog
	if *histMax == 0 {
		return zero, ops, usagef("--history-max must be at least 1")
	}
	if *histAge < 0 {
		return zero, ops, usagef("--history-max-age must not be negative")
	}
	cfg.HistoryMax, cfg.HistoryMaxAge = *histMax, *histAge
	if ops.metricsListen != "" {
		if err := metricserver.CheckAddr(ops.metricsListen); err != nil {
			return zero, ops, usagef("--metrics-listen: %w", err)
		}
	}

	dnsCfg, err := dnsFlags.config()
	if err != nil {
		return zero, ops, err
	}
	ops.ddns = dnsCfg

	cfg.Prefixes = make(map[string][]netip.Prefix)
	for k, ps := range fc.Prefixes {
		for _, p := range ps {
			pp, err := parsePrefix(p)
			if err != nil {
				return zero, ops, usagef("--config prefixes[%s]: %w", k, err)
			}
			cfg.Prefixes[k] = append(cfg.Prefixes[k], pp)
		}
	}
	flagged := map[string]bool{} // a key set by --prefix replaces the file's entry for it
	for _, kv := range *prefixes {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return zero, ops, usagef("invalid --prefix %q: want IFACE=PREFIX", kv)
		}
		p, err := parsePrefix(v)
		if err != nil {
			return zero, ops, usagef("invalid --prefix %q: %w", kv, err)
		}
		if !flagged[k] {
			flagged[k] = true
			cfg.Prefixes[k] = nil
		}
		cfg.Prefixes[k] = append(cfg.Prefixes[k], p)
	}
	allow := fc.LeasequeryAllow
	if fs.Changed("leasequery-allow") {
		allow = *lqAllow
	}
	for _, a := range allow {
		p, err := parsePrefix(a)
		if err != nil {
			return zero, ops, usagef("invalid --leasequery-allow %q: %w", a, err)
		}
		cfg.LeasequeryAllow = append(cfg.LeasequeryAllow, p)
	}

	format, level := *logFormat, *logLevel
	if fc.LogFormat != "" && !fs.Changed("log-format") {
		format = fc.LogFormat
	}
	if fc.LogLevel != "" && !fs.Changed("log-level") {
		level = fc.LogLevel
	}
	logger, err := newLogger(stderr, format, level)
	if err != nil {
		return zero, ops, err
	}
	cfg.Logger = logger
	if len(cfg.Interfaces) == 0 {
		// Without one the server would join no ff02::1:2 group and
		// receive no client's multicast at all.
		return zero, ops, usagef("no interface: give -i IFACE (repeatable) or \"interfaces\" in --config")
	}
	return cfg, ops, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if !p.Addr().Is6() || p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%s is not an IPv6 prefix", s)
	}
	return p.Masked(), nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	lv, err := daemonlog.ParseLevel(level)
	if err != nil {
		return nil, usagef("invalid --log-level: %w", err)
	}
	if format != "text" && format != "json" {
		return nil, usagef("invalid --log-format %q: want text or json", format)
	}
	return daemonlog.New(w, daemonlog.Options{Format: format, Level: lv})
}

// parseSelector parses the --address / --client-id pair of query and
// history: exactly one of them.
func parseSelector(cmd, addr, cid string) (netip.Addr, []byte, error) {
	switch {
	case (addr == "") == (cid == ""):
		return netip.Addr{}, nil, usagef("%s: give exactly one of --address and --client-id", cmd)
	case addr != "":
		a, err := netip.ParseAddr(addr)
		if err != nil || !a.Is6() {
			return netip.Addr{}, nil, usagef("%s: invalid --address %q", cmd, addr)
		}
		return a, nil, nil
	}
	b, err := hex.DecodeString(strings.ReplaceAll(cid, ":", ""))
	if err != nil || len(b) == 0 {
		return netip.Addr{}, nil, usagef("%s: invalid --client-id %q: want hex", cmd, cid)
	}
	return netip.Addr{}, b, nil
}

func runQuery(args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("addrreg-refserver query", pflag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: addrreg-refserver query --address A | --client-id HEX | --bulk --link-address L [--server ADDR] [--json] [--bulk]\n\n"+
			"Asks a server by leasequery (RFC 5007; over TCP, RFC 5460, with --bulk or when the answer is too large).\n"+
			"Exit status: 0; 1 when the query fails or the server answers with an error status; 2 on a bad flag.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	addr := fs.String("address", "", "QUERY_BY_ADDRESS: the registered address")
	cid := fs.String("client-id", "", "QUERY_BY_CLIENTID: the client's DUID in hex (colons allowed)")
	server := fs.String("server", "::1", "server address, ADDR or [ADDR]:PORT (link-local needs %zone)")
	link := fs.String("link-address", "", "link-address of the query (default 0::0, all links)")
	asJSON := fs.Bool("json", false, "print JSON")
	bulk := fs.Bool("bulk", false, "ask over TCP (Bulk Leasequery, RFC 5460); without --address and --client-id: every binding on --link-address (0::0 or none: all)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	var q refserver.QueryOptions
	switch {
	case *addr == "" && *cid == "" && *bulk:
		q.ByLink = true
	case (*addr == "") == (*cid == ""):
		return usagef("query: give exactly one of --address and --client-id (or --bulk for a whole link)")
	case *addr != "":
		a, err := netip.ParseAddr(*addr)
		if err != nil || !a.Is6() {
			return usagef("invalid --address %q", *addr)
		}
		q.Address = a
	default:
		b, err := hex.DecodeString(strings.ReplaceAll(*cid, ":", ""))
		if err != nil || len(b) == 0 {
			return usagef("invalid --client-id %q: want hex", *cid)
		}
		q.ClientID = b
	}
	if ap, err := netip.ParseAddrPort(*server); err == nil {
		q.Server = ap
	} else if a, err := netip.ParseAddr(*server); err == nil {
		q.Server = netip.AddrPortFrom(a, 547)
	} else {
		return usagef("invalid --server %q", *server)
	}
	if *link != "" {
		a, err := netip.ParseAddr(*link)
		if err != nil || !a.Is6() {
			return usagef("invalid --link-address %q", *link)
		}
		q.LinkAddr = a
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var r *refserver.LeasequeryReply
	var err error
	if !*bulk {
		r, err = refserver.Query(ctx, q)
		if err == nil && r.TooLarge() {
			// RFC 5460: what does not fit a datagram comes over TCP.
			fmt.Fprintf(stderr, "addrreg-refserver: %s: asking over TCP\n", r.Message)
			*bulk = true
		}
	}
	if *bulk {
		r, err = refserver.BulkQuery(ctx, q)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(toJSON(r)); err != nil {
			return fmt.Errorf("write JSON: %w", err)
		}
	} else {
		printTable(stdout, r)
	}
	if r.Status != refserver.StatusSuccess {
		return fmt.Errorf("server answered %s: %s", refserver.StatusText(r.Status), r.Message)
	}
	return nil
}

type jsonAddr struct {
	Addr      string `json:"addr"`
	Preferred uint32 `json:"preferred_lifetime"`
	Valid     uint32 `json:"valid_lifetime"`
}

type jsonClient struct {
	DUID    string     `json:"duid"`
	CLTTime uint32     `json:"clt_time"`
	Addrs   []jsonAddr `json:"addrs"`
}

type jsonReply struct {
	Status     uint16       `json:"status"`
	StatusText string       `json:"status_text"`
	Message    string       `json:"message,omitempty"`
	ServerID   string       `json:"server_id"`
	Clients    []jsonClient `json:"clients"`
	// ClientLinks: the client has bindings on several links (RFC 5007
	// OPTION_LQ_CLIENT_LINK); query again with --link-address.
	ClientLinks []string `json:"client_links,omitempty"`
}

func toJSON(r *refserver.LeasequeryReply) jsonReply {
	out := jsonReply{Status: r.Status, StatusText: refserver.StatusText(r.Status), Message: r.Message,
		ServerID: hex.EncodeToString(r.ServerID), Clients: []jsonClient{}}
	for _, c := range r.Clients {
		jc := jsonClient{DUID: hex.EncodeToString(c.DUID), CLTTime: c.CLTTime, Addrs: []jsonAddr{}}
		for _, a := range c.Addrs {
			jc.Addrs = append(jc.Addrs, jsonAddr{Addr: a.Addr.String(), Preferred: a.Preferred, Valid: a.Valid})
		}
		out.Clients = append(out.Clients, jc)
	}
	for _, l := range r.ClientLinks {
		out.ClientLinks = append(out.ClientLinks, l.String())
	}
	return out
}

func printTable(w io.Writer, r *refserver.LeasequeryReply) {
	if r.Status != refserver.StatusSuccess {
		fmt.Fprintf(w, "status: %s (%d) %s\n", refserver.StatusText(r.Status), r.Status, r.Message)
		return
	}
	if len(r.ClientLinks) > 0 {
		fmt.Fprintln(w, "bindings on several links; query each with --link-address:")
		for _, l := range r.ClientLinks {
			fmt.Fprintf(w, "  %s\n", l)
		}
		return
	}
	if len(r.Clients) == 0 {
		fmt.Fprintln(w, "no bindings")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DUID\tADDRESS\tPREFERRED\tVALID\tLAST SEEN")
	for _, c := range r.Clients {
		for _, a := range c.Addrs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s ago\n", hex.EncodeToString(c.DUID), a.Addr, lifetime(a.Preferred), lifetime(a.Valid),
				time.Duration(c.CLTTime)*time.Second)
		}
	}
	tw.Flush()
}

func lifetime(s uint32) string {
	if s == 0xffffffff {
		return "infinite"
	}
	return fmt.Sprintf("%ds", s)
}
