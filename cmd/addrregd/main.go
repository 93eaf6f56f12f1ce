// Command addrregd registers the host's self-generated IPv6 addresses with
// DHCPv6 servers (RFC 9686), so that the network's DHCP logs know which host
// holds which address. It needs no configuration file: every setting is a
// flag with a sensible default (addrregd --help).
//
// Its interface is the command line (flags, output, exit status), not Go:
// the packages it is built from are listed with their status in README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/addrreg/addrreg/agent"
	"github.com/addrreg/addrreg/internal/ctlsock"
	"github.com/addrreg/addrreg/internal/daemonlog"
	"github.com/addrreg/addrreg/internal/hostname"
	"github.com/addrreg/addrreg/internal/metricserver"
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
	fqdnSet                bool // --fqdn given, even empty
	sendHostname           bool
	rate                   float64
	burst                  int
	watchRAs               bool
	logFormat              string
	level                  slog.Level // parsed from logLevel by validate
	logLevel               string
	showVersion            bool
	check                  bool
	registerTemporary      bool
	controlSocket          string
	controlGroup           string
	metricsListen          string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if isStatusCommand(args) {
		return runStatus(args[1:], stdout, stderr)
	}
	o, fs, err := parseFlags(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintf(stdout, "Usage: addrregd [flags]\n       addrregd --check [flags]\n       addrregd status [--json] [-i IFACE] [--control-socket PATH]\n\naddrregd registers this host's self-generated IPv6 addresses with DHCPv6 servers (RFC 9686).\n'addrregd status' asks the running daemon what it knows (exit 3: none running; 'addrregd status --help').\nExit status: 0; 1 on a runtime failure (or no /etc/machine-id to derive the DUID from);\n2 on a bad flag or configuration. --check stops after the checks, with the same status.\n\nFlags:\n%s", fs.FlagUsages())
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
	log, err := daemonlog.New(stderr, daemonlog.Options{Format: o.logFormat, Level: o.level})
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
	if o.check {
		ifaces := "all"
		if len(o.interfaces) > 0 {
			ifaces = strings.Join(o.interfaces, ",")
		}
		fmt.Fprintf(stdout, "addrregd: configuration OK: duid %x, interfaces %s, enable %t\n", regCfg.ClientID.ToBytes(), ifaces, o.enable)
		return 0
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
	fs.BoolVar(&o.requireRAFlags, "require-ra-flags", true, "register and refresh only on interfaces where an RA with M or O set is in effect")
	fs.StringVar(&o.duid, "duid", "", "client DUID in hex (default: DUID-UUID derived from /etc/machine-id)")
	fs.StringVar(&o.machineID, "machine-id", "/etc/machine-id", "file the default DUID is derived from")
	fs.BoolVar(&o.sendHostname, "send-hostname", true, "send the host's name in a Client FQDN option, following it when it changes (false: send no name)")
	fs.StringVar(&o.fqdn, "fqdn", "", "send this name in the Client FQDN option instead of the host's")
	fs.Float64Var(&o.rate, "rate", 100, "start at most this many exchanges per second")
	fs.IntVar(&o.burst, "burst", 10, "exchanges that may start at once")
	fs.BoolVar(&o.registerTemporary, "register-temporary", true, "also register RFC 8981 temporary addresses (false keeps them off the server: RFC 9686 §6)")
	fs.StringVar(&o.controlSocket, "control-socket", defaultControlSocket, "unix socket 'addrregd status' reads (empty: none)")
	fs.StringVar(&o.controlGroup, "control-group", "", "group that may read the control socket (default: root only)")
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. [::1]:9547, 127.0.0.1:9547 or :9547 (default: off)")
	fs.BoolVar(&o.watchRAs, "watch-ras", true, "also read RAs from the wire for M/O (needed when accept_ra = 0)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&o.check, "check", false, "check the flags and the DUID's source, print \"configuration OK\" and exit (0, else 1 or 2 as when starting)")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, fs, err
	}
	if fs.NArg() > 0 {
		return o, fs, fmt.Errorf("unexpected argument %q: addrregd takes only flags", fs.Arg(0))
	}
	o.fqdnSet = fs.Changed("fqdn")
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
	var err error
	if o.level, err = daemonlog.ParseLevel(o.logLevel); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	if o.metricsListen != "" {
		if err := metricserver.CheckAddr(o.metricsListen); err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
	}
	if o.controlGroup != "" && o.controlSocket == "" {
		return errors.New("--control-group needs a --control-socket")
	}
	for _, name := range append(append([]string{}, o.interfaces...), o.exclude...) {
		if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ ") {
			return fmt.Errorf("--interface/--exclude-interface: %q is not an interface name", name)
		}
	}
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
	if o.fqdnSet {
		switch {
		case o.fqdn == "":
			return errors.New("--fqdn: empty name (--send-hostname=false sends no name)")
		case !o.sendHostname:
			return errors.New("--fqdn and --send-hostname=false: give one (--fqdn sends that name, --send-hostname=false none)")
		}
		if err := registrar.ValidateFQDN(o.fqdn); err != nil {
			return fmt.Errorf("--fqdn: %w", err)
		}
	}
	return nil
}

// followHostname: the name sent is the host's, followed as it changes
// (the default), not a fixed --fqdn or none.
func (o *options) followHostname() bool { return o.sendHostname && !o.fqdnSet }

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

func configure(o *options) (agent.Config, registrar.Config, error) {
	var err error
	regCfg := registrar.Config{
		Retrans: scheduler.Retrans{IRT: o.irt, MRT: o.mrt, MRD: o.mrd, MRC: o.mrc},
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
		SkipTemporary:    !o.registerTemporary,
		Policy:           pol,
		Rate:             o.rate,
		Burst:            o.burst,
		Retry:            scheduler.Retry{First: o.retryFirst, Max: o.retryMax},
		StatePath:        o.stateFile,
		FQDN:             o.fqdn, // the host's, if followed: serve
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

	var metricsLn net.Listener
	if o.metricsListen != "" {
		ln, err := metricserver.Listen(o.metricsListen)
		if err != nil {
			return err
		}
		metricsLn = ln
		defer ln.Close()
	}
	reg, err := registrar.New(regCfg)
	if err != nil {
		return fmt.Errorf("open DHCPv6 sockets: %w", err)
	}
	if o.followHostname() {
		w, err := hostname.New(hostname.Options{})
		if err != nil {
			return fmt.Errorf("follow the host name: %w", err)
		}
		// Closed after the agent has stopped (its reader ends with Run).
		defer w.Close()
		names := hostNames{w: w, log: log}
		cfg.FQDN, cfg.HostNames = names.sendable(w.Current()), names
		how := "woken by the kernel (poll on " + hostname.ProcPath + ")"
		if w.Polling() {
			how = fmt.Sprintf("read every %v (%s cannot be opened)", hostname.DefaultInterval, hostname.ProcPath)
		}
		log.Info("following the host name", "hostname", w.Current(), "fqdn", cfg.FQDN, "changes", how)
	}
	mon := netmon.New(netmon.Options{WatchRAs: o.watchRAs, Include: o.includePfx, Exclude: o.excludePfx, Logger: log.With("part", "netmon")})
	sd := newNotifier(log)
	if sd.on {
		cfg.Heartbeat, cfg.HeartbeatInterval = sd.heartbeat, sd.interval()
	}
	ag := agent.New(cfg, mon, reg)
	duid := fmt.Sprintf("%x", regCfg.ClientID.ToBytes())
	log.Info("addrregd starting", "version", version, "duid", duid,
		"interfaces", o.interfaces, "enable", o.enable, "register_temporary", o.registerTemporary, "fqdn", cfg.FQDN)

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

	// The control socket and the metrics endpoint live as long as the
	// agent; neither is essential to registering, so a control socket that
	// cannot be made is logged, not fatal.
	var aux sync.WaitGroup
	defer aux.Wait()
	if o.controlSocket != "" {
		ln, err := ctlsock.Listen(o.controlSocket, o.controlGroup)
		if err != nil {
			log.Error("control socket unavailable: 'addrregd status' will not answer", "path", o.controlSocket, "err", err)
		} else {
			if ln.Activated && o.controlGroup != "" {
				log.Warn("--control-group not applied: the socket is systemd's, its group addrregd.socket's SocketGroup=", "path", o.controlSocket)
			}
			info := daemonInfo{Version: version, PID: os.Getpid(), DUID: duid, Started: time.Now(),
				RegisterTemporary: o.registerTemporary, Enable: o.enable}
			aux.Go(func() { serveControl(agentCtx, ln, ag, info, log.With("part", "control")) })
		}
	}
	if metricsLn != nil {
		mreg := metricsRegistry(ag, reg, mon)
		aux.Go(func() {
			if err := metricserver.Serve(agentCtx, metricsLn, mreg, log.With("part", "metrics")); err != nil {
				log.Error("metrics endpoint stopped", "err", err)
			}
		})
	}

	// The raw socket is open (registrar.New); READY=1 once netmon has
	// subscribed and read the kernel's state. STOPPING=1 at the first signal.
	ready, stopping := mon.Ready(), ctx.Done()
	var runErr error
	for done := false; !done; {
		select {
		case <-ready:
			sd.ready()
			ready = nil
		case <-stopping:
			sd.stopping()
			stopping = nil
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
	stopAgent()
	aux.Wait()
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
		attrs := []any{"iface", ifc.Name, "state", ifc.State.String(), "ra_m_or_o", ifc.SeenMO, "addresses", len(ifc.Addresses)}
		if s := ifc.Server; s != nil {
			attrs = append(attrs, "server", s.Address, "server_duid", fmt.Sprintf("%x", []byte(s.DUID)))
		}
		if !ifc.NextProbe.IsZero() {
			attrs = append(attrs, "next_probe", ifc.NextProbe.Format(time.RFC3339))
		}
		log.Info("status", attrs...)
		for _, a := range ifc.Addresses {
			attrs := []any{"iface", ifc.Name, "addr", a.Addr, "kind", string(a.Kind), "phase", a.Phase.String()}
			if !a.LastRegistered.IsZero() {
				attrs = append(attrs, "last_registered", a.LastRegistered.Format(time.RFC3339))
			}
			if !a.NextRefresh.IsZero() {
				attrs = append(attrs, "next_refresh", a.NextRefresh.Format(time.RFC3339), "refresh_reason", string(a.RefreshReason))
			}
			if a.LastError != "" {
				attrs = append(attrs, "last_error", a.LastError)
			}
			log.Info("status", attrs...)
		}
	}
}
