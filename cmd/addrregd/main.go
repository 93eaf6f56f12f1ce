// Command addrregd registers the host's self-generated IPv6 addresses with
// DHCPv6 servers (RFC 9686), so that the network's DHCP logs know which host
// holds which address. It needs no configuration file: every setting is a
// flag with a sensible default (addrregd --help).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/addrreg/addrreg/agent"
	"github.com/addrreg/addrreg/netmon"
	"github.com/addrreg/addrreg/registrar"
	"github.com/addrreg/addrreg/scheduler"
)

// version is set by the Makefile with -ldflags -X main.version=….
var version = "dev"

// exitUsage is the exit status for a bad command line.
const exitUsage = 2

type options struct {
	enable                 bool
	interfaces             []string
	exclude                []string
	includePrefixes        []string
	excludePrefixes        []string
	includePfx, excludePfx []netip.Prefix // parsed from the two above by validate
	irt, mrt, mrd          time.Duration
	mrc                    int
	staticRefresh          time.Duration
	retryFirst, retryMax   time.Duration
	stateFile              string
	maxRefresh             time.Duration
	coalesce               time.Duration
	tolerance              time.Duration
	deregister             bool
	deregisterOnStop       bool
	requireRAFlags         bool
	duid                   string
	machineID              string
	fqdn                   string
	rate                   float64
	burst                  int
	watchRAs               bool
	logFormat              string
	logLevel               string
	showVersion            bool
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, fs, err := parseFlags(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintf(stdout, "Usage: addrregd [flags]\n\naddrregd registers this host's self-generated IPv6 addresses with DHCPv6 servers (RFC 9686).\n\nFlags:\n%s", fs.FlagUsages())
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "addrregd: %v\nRun 'addrregd --help' for usage.\n", err)
		return exitUsage
	}
	if o.showVersion {
		fmt.Fprintf(stdout, "addrregd %s\n", version)
		return 0
	}
	log, err := newLogger(o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "addrregd: %v\n", err)
		return exitUsage
	}
	cfg, regCfg, err := configure(o)
	if err != nil {
		fmt.Fprintf(stderr, "addrregd: %v\n", err)
		if errors.Is(err, agent.ErrNoMachineID) {
			return 1 // the machine, not the command line, is at fault
		}
		return exitUsage
	}
	regCfg.Logger = log.With("part", "registrar")
	cfg.Logger = log.With("part", "agent")
	if err := serve(o, cfg, regCfg, log); err != nil {
		log.Error("addrregd failed", "err", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*options, *pflag.FlagSet, error) {
	o := &options{}
	fs := pflag.NewFlagSet("addrregd", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.BoolVar(&o.enable, "enable", true, "send ADDR-REG-INFORMs (false: run, watch and log, but send nothing)")
	fs.StringSliceVarP(&o.interfaces, "interface", "i", nil, "register on this interface only (repeatable; default: all)")
	fs.StringSliceVar(&o.exclude, "exclude-interface", nil, "never register on this interface (repeatable)")
	fs.StringSliceVar(&o.includePrefixes, "include-prefix", nil, "register addresses in this prefix even if they look DHCPv6-assigned (repeatable)")
	fs.StringSliceVar(&o.excludePrefixes, "exclude-prefix", nil, "never register addresses in this prefix (repeatable)")
	fs.DurationVar(&o.irt, "irt", scheduler.DefaultRegistration.IRT, "initial retransmission time of an ADDR-REG-INFORM (RFC 8415 §15)")
	fs.IntVar(&o.mrc, "mrc", scheduler.DefaultRegistration.MRC, "maximum transmissions of one ADDR-REG-INFORM (0: no limit)")
	fs.DurationVar(&o.mrt, "mrt", 0, "maximum retransmission time (0: no limit)")
	fs.DurationVar(&o.mrd, "mrd", 0, "maximum duration of one exchange (0: no limit)")
	fs.DurationVar(&o.retryFirst, "retry-first", scheduler.DefaultRetryFirst, "after a failed exchange (no valid reply after MRC transmissions), try again after this, doubling per failure")
	fs.DurationVar(&o.retryMax, "retry-max", scheduler.DefaultRetryMax, "cap on the retry delay (also capped at the address's refresh interval): a server that drops every registration sees at most MRC transmissions per address per step")
	fs.StringVar(&o.stateFile, "state-file", agent.DefaultStatePath, "file of the addresses registered, to deregister those gone across a restart (\"\": none)")
	fs.DurationVar(&o.staticRefresh, "static-refresh", scheduler.DefaultStaticInterval, "refresh interval of static and infinite-lifetime addresses")
	fs.DurationVar(&o.maxRefresh, "max-refresh", 0, "cap on the refresh interval (0: none; 4h reproduces draft -08)")
	fs.DurationVar(&o.coalesce, "coalesce", scheduler.DefaultCoalesce, "refresh together an interface's addresses due within this window")
	fs.DurationVar(&o.tolerance, "tolerance", scheduler.DefaultTolerance, "a lifetime change larger than this triggers a refresh")
	fs.BoolVar(&o.deregister, "deregister", true, "deregister (zero lifetimes) an address removed from its interface")
	fs.BoolVar(&o.deregisterOnStop, "deregister-on-stop", false, "deregister every address when the daemon stops")
	fs.BoolVar(&o.requireRAFlags, "require-ra-flags", true, "register only on interfaces that have seen an RA with M or O set")
	fs.StringVar(&o.duid, "duid", "", "client DUID in hex (default: DUID-UUID derived from /etc/machine-id)")
	fs.StringVar(&o.machineID, "machine-id", "/etc/machine-id", "file the default DUID is derived from")
	fs.StringVar(&o.fqdn, "fqdn", "", "send this name in a Client FQDN option")
	fs.Float64Var(&o.rate, "rate", 100, "start at most this many exchanges per second")
	fs.IntVar(&o.burst, "burst", 10, "exchanges that may start at once")
	fs.BoolVar(&o.watchRAs, "watch-ras", true, "also read RAs from the wire for M/O (needed when accept_ra = 0)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, fs, err
	}
	if fs.NArg() > 0 {
		return o, fs, fmt.Errorf("unexpected argument %q: addrregd takes only flags", fs.Arg(0))
	}
	return o, fs, validate(o)
}

func validate(o *options) error {
	switch {
	case o.irt <= 0:
		return fmt.Errorf("--irt must be positive, not %v", o.irt)
	case o.mrc < 0:
		return fmt.Errorf("--mrc must be 0 (no limit) or more, not %d", o.mrc)
	case o.mrt < 0:
		return fmt.Errorf("--mrt must not be negative, not %v", o.mrt)
	case o.mrd < 0:
		return fmt.Errorf("--mrd must not be negative, not %v", o.mrd)
	case o.mrc == 0 && o.mrd == 0:
		return errors.New("--mrc 0 needs --mrd: an exchange must end")
	case o.retryFirst <= 0:
		return fmt.Errorf("--retry-first must be positive, not %v", o.retryFirst)
	case o.retryMax < o.retryFirst:
		return fmt.Errorf("--retry-max must be at least --retry-first (%v), not %v", o.retryFirst, o.retryMax)
	case o.stateFile != "" && !filepath.IsAbs(o.stateFile):
		return fmt.Errorf("--state-file must be an absolute path or empty, not %q", o.stateFile)
	case o.staticRefresh <= 0:
		return fmt.Errorf("--static-refresh must be positive, not %v", o.staticRefresh)
	case o.maxRefresh < 0:
		return fmt.Errorf("--max-refresh must be 0 (none) or positive, not %v", o.maxRefresh)
	case o.coalesce < 0:
		return fmt.Errorf("--coalesce must not be negative, not %v", o.coalesce)
	case o.tolerance < 0:
		return fmt.Errorf("--tolerance must not be negative, not %v", o.tolerance)
	case o.rate <= 0:
		return fmt.Errorf("--rate must be positive, not %v", o.rate)
	case o.burst < 1:
		return fmt.Errorf("--burst must be at least 1, not %d", o.burst)
	case o.logFormat != "text" && o.logFormat != "json":
		return fmt.Errorf("--log-format must be text or json, not %q", o.logFormat)
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level must be debug, info, warn or error, not %q", o.logLevel)
	}
	for _, name := range append(append([]string{}, o.interfaces...), o.exclude...) {
		if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ ") {
			return fmt.Errorf("--interface/--exclude-interface: %q is not an interface name", name)
		}
	}
	var err error
	if o.includePfx, err = parsePrefixes("--include-prefix", o.includePrefixes); err != nil {
		return err
	}
	if o.excludePfx, err = parsePrefixes("--exclude-prefix", o.excludePrefixes); err != nil {
		return err
	}
	if o.duid != "" {
		if _, err := agent.ParseDUID(o.duid); err != nil {
			return fmt.Errorf("--duid: %w", err)
		}
	}
	if o.fqdn != "" {
		if err := registrar.ValidateFQDN(o.fqdn); err != nil {
			return fmt.Errorf("--fqdn: %w", err)
		}
	}
	return nil
}

func parsePrefixes(flag string, ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
			return nil, fmt.Errorf("%s: %q is not an IPv6 prefix", flag, s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func newLogger(o *options, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	if o.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	// Under systemd the journal stamps every line: no timestamps of our own.
	if os.Getenv("JOURNAL_STREAM") != "" {
		hopts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	return slog.New(slog.NewTextHandler(w, hopts)), nil
}

func configure(o *options) (agent.Config, registrar.Config, error) {
	var err error
	regCfg := registrar.Config{
		Retrans: scheduler.Retrans{IRT: o.irt, MRT: o.mrt, MRD: o.mrd, MRC: o.mrc},
		FQDN:    o.fqdn,
	}
	if o.duid != "" {
		regCfg.ClientID, err = agent.ParseDUID(o.duid)
	} else {
		regCfg.ClientID, err = agent.DUIDFromMachineID(o.machineID)
		if err != nil {
			err = fmt.Errorf("%w (set one with --duid)", err)
		}
	}
	if err != nil {
		return agent.Config{}, regCfg, err
	}
	pol := scheduler.NewPolicy(mrand.Float64)
	pol.Tolerance = o.tolerance
	pol.StaticInterval = o.staticRefresh
	pol.MaxInterval = o.maxRefresh
	pol.Coalesce = o.coalesce
	cfg := agent.Config{
		Enable:           o.enable,
		Interfaces:       o.interfaces,
		Exclude:          o.exclude,
		RequireRAFlags:   o.requireRAFlags,
		Deregister:       o.deregister,
		DeregisterOnStop: o.deregisterOnStop,
		Policy:           pol,
		Rate:             o.rate,
		Burst:            o.burst,
		Retry:            scheduler.Retry{First: o.retryFirst, Max: o.retryMax},
		StatePath:        o.stateFile,
	}
	return cfg, regCfg, nil
}

func serve(o *options, cfg agent.Config, regCfg registrar.Config, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// After the first signal, a second one gets the default action: an
	// operator pressing Ctrl-C twice is not kept waiting.
	go func() { <-ctx.Done(); stop() }()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(hup)

	reg, err := registrar.New(regCfg)
	if err != nil {
		return fmt.Errorf("open DHCPv6 sockets: %w", err)
	}
	mon := netmon.New(netmon.Options{WatchRAs: o.watchRAs, Include: o.includePfx, Exclude: o.excludePfx, Logger: log.With("part", "netmon")})
	ag := agent.New(cfg, mon, reg)
	log.Info("addrregd starting", "version", version, "duid", fmt.Sprintf("%x", regCfg.ClientID.ToBytes()),
		"interfaces", o.interfaces, "enable", o.enable)

	// The registrar and netmon outlive the agent: deregistration on stop
	// needs both after the agent's context has ended.
	lowerCtx, stopLower := context.WithCancel(context.Background())
	defer stopLower()
	lower, lowerCtx := errgroup.WithContext(lowerCtx)
	// A component that fails beyond retry (the registrar's socket closed or
	// broken, netmon's subscription lost for good) ends the daemon with a
	// non-zero status, so that its service manager starts it afresh: a
	// daemon that runs on deaf is the one failure nobody notices.
	lower.Go(func() error { return component("registrar", reg.Run(lowerCtx)) })
	lower.Go(func() error { return component("netmon", mon.Run(lowerCtx)) })
	faultInjection(reg, log)

	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	agentErr := make(chan error, 1)
	go func() { agentErr <- ag.Run(agentCtx) }()

	var runErr error
	for done := false; !done; {
		select {
		case sig := <-hup:
			if sig == syscall.SIGUSR1 {
				logStatus(ctx, ag, log)
				continue
			}
			ag.Rediscover()
		case <-lowerCtx.Done():
			// netmon or the registrar failed: stop the agent too.
			stopAgent()
			runErr = <-agentErr
			done = true
		case runErr = <-agentErr:
			done = true
		}
	}
	stopLower()
	err = lower.Wait()
	if err == nil || errors.Is(err, context.Canceled) {
		err = runErr // the agent's own, e.g. netmon's event stream ended
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("fatal: a component failed beyond retry; exiting so the service manager restarts addrregd", "err", err)
		return err
	}
	log.Info("addrregd stopped")
	return nil
}

// component names the part a fatal error came from.
func component(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", name, err)
}

func logStatus(ctx context.Context, ag *agent.Agent, log *slog.Logger) {
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := ag.Status(sctx)
	if err != nil {
		log.Warn("status unavailable", "err", err)
		return
	}
	for _, ifc := range st.Interfaces {
		log.Info("status", "iface", ifc.Name, "state", ifc.State, "ra_m_or_o", ifc.SeenMO, "addresses", len(ifc.Addresses))
		for _, a := range ifc.Addresses {
			attrs := []any{"iface", ifc.Name, "addr", a.Addr, "phase", a.Phase}
			if !a.NextRefresh.IsZero() {
				attrs = append(attrs, "next_refresh", a.NextRefresh.Format(time.RFC3339))
			}
			log.Info("status", attrs...)
		}
	}
}
