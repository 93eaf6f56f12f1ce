// Command dhcp6-shield is a userspace layer-2 switch between network
// interfaces that enforces DHCPv6-Shield (RFC 7610): DHCPv6 messages meant for
// clients (UDP to port 546) and Relay-Replies arriving on untrusted ports are
// dropped, counted per port and reason, and logged.
//
//	dhcp6-shield --trusted eth0 --port eth1 --port eth2 [--unknown-next-header drop|pass] [--stats /run/dhcp6-shield.sock]
//	dhcp6-shield --check --trusted eth0 --port eth1 …
//
// The counters are served as JSON on the --stats unix socket and written to
// the log on SIGUSR1. SIGTERM or SIGINT stops it (exit 0).
//
// Exit status: 0 on success, after SIGTERM/SIGINT, and for --check,
// --help and --version; 1 on a runtime failure; 2 on a bad flag or
// configuration (--check: a configuration it rejects).
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
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/addrreg/addrreg/internal/daemonlog"
	"github.com/addrreg/addrreg/internal/metricserver"
	"github.com/addrreg/addrreg/internal/shield"
)

// version is set by the Makefile with -ldflags -X main.version=….
var version = "dev"

const synopsis = `Usage: dhcp6-shield --trusted IFACE --port IFACE [--port IFACE …] [flags]
       dhcp6-shield --check --trusted IFACE --port IFACE … [flags]

dhcp6-shield switches frames between the interfaces and drops DHCPv6
messages meant for clients (UDP to port 546) and Relay-Replies arriving on
untrusted ports (DHCPv6-Shield, RFC 7610). Exit status: 0; 1 on a runtime failure;
2 on a bad flag or configuration.

Flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	cfg         shield.SwitchConfig
	stats       string
	metrics     string
	level       slog.Level
	check       bool
	showVersion bool
}

// parse reads the command line; errors name the flag at fault. --help
// writes the synopsis and the flags to stdout and returns pflag.ErrHelp.
func parse(args []string, stdout io.Writer) (options, error) {
	fs := pflag.NewFlagSet("dhcp6-shield", pflag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.SortFlags = false
	fs.Usage = func() { fmt.Fprint(stdout, synopsis+fs.FlagUsages()) }
	trusted := fs.StringArray("trusted", nil, "trusted `IFACE`, where DHCPv6 servers or relays are (RFC 7610 §4); repeatable")
	ports := fs.StringArray("port", nil, "untrusted `IFACE`; repeatable")
	unh := fs.String("unknown-next-header", "drop", "what to do with packets holding an unrecognised Next Header: drop or pass (RFC 7610 §5 rule 3)")
	stats := fs.String("stats", "", "unix socket `PATH` that answers each connection with the counters as JSON")
	metrics := fs.String("metrics-listen", "", "serve Prometheus metrics at http://`ADDR`/metrics, e.g. [::1]:9549, 127.0.0.1:9549 or :9549 (default: off)")
	logRate := fs.Float64("log-rate", 10, "security log lines per second per port (after a burst of 20); counters are not limited")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	keep := fs.Bool("keep-offloads", false, "do not turn off VLAN, GRO/LRO and segmentation offloads on the ports")
	var o options
	fs.BoolVar(&o.check, "check", false, "check the flags and exit: 0 and \"configuration OK\", or 2 and what is wrong")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.showVersion {
		return o, nil
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q: interfaces are given with --port and --trusted", fs.Arg(0))
	}
	switch *unh {
	case "drop":
		o.cfg.Shield.UnknownNextHeader = shield.Drop
	case "pass":
		o.cfg.Shield.UnknownNextHeader = shield.Pass
	default:
		return o, fmt.Errorf("invalid value %q for --unknown-next-header: want drop or pass", *unh)
	}
	if *logRate <= 0 {
		return o, fmt.Errorf("invalid value %v for --log-rate: want > 0", *logRate)
	}
	if err := o.level.UnmarshalText([]byte(*level)); err != nil {
		return o, fmt.Errorf("invalid value %q for --log-level: %w", *level, err)
	}
	seen := map[string]string{}
	add := func(flag string, names []string, t bool) error {
		for _, n := range names {
			if n == "" {
				return fmt.Errorf("empty interface name in --%s", flag)
			}
			if prev, ok := seen[n]; ok {
				return fmt.Errorf("interface %s given twice (--%s and --%s)", n, prev, flag)
			}
			seen[n] = flag
			o.cfg.Ports = append(o.cfg.Ports, shield.Port{Name: n, Trusted: t})
		}
		return nil
	}
	if err := add("trusted", *trusted, true); err != nil {
		return o, err
	}
	if err := add("port", *ports, false); err != nil {
		return o, err
	}
	if len(o.cfg.Ports) < 2 {
		return o, errors.New("need at least two interfaces in --port and --trusted")
	}
	o.cfg.LogRate = *logRate
	o.cfg.KeepOffloads = *keep
	o.stats = *stats
	if *metrics != "" {
		if err := metricserver.CheckAddr(*metrics); err != nil {
			return o, fmt.Errorf("invalid value for --metrics-listen: %w", err)
		}
	}
	o.metrics = *metrics
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stdout)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "dhcp6-shield: %v\nRun 'dhcp6-shield --help' for usage.\n", err)
		return 2
	}
	if o.showVersion {
		fmt.Fprintf(stdout, "dhcp6-shield %s\n", version)
		return 0
	}
	if o.check {
		var trusted, untrusted []string
		for _, p := range o.cfg.Ports {
			if p.Trusted {
				trusted = append(trusted, p.Name)
			} else {
				untrusted = append(untrusted, p.Name)
			}
		}
		fmt.Fprintf(stdout, "dhcp6-shield: configuration OK: trusted %s, untrusted %s, unknown next header: %s\n",
			strings.Join(trusted, ","), strings.Join(untrusted, ","), o.cfg.Shield.UnknownNextHeader)
		return 0
	}
	log, err := daemonlog.New(stderr, daemonlog.Options{Level: o.level})
	if err != nil {
		fmt.Fprintf(stderr, "dhcp6-shield: %v\n", err)
		return 2
	}
	o.cfg.Logger = log
	sw, err := shield.NewSwitch(o.cfg)
	if err != nil {
		log.Error("dhcp6-shield", "err", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)

	g, ctx := errgroup.WithContext(ctx)
	if o.stats != "" {
		_ = os.Remove(o.stats) // a stale socket of a previous run
		ln, err := net.Listen("unix", o.stats)
		if err != nil {
			log.Error("stats socket", "path", o.stats, "err", err)
			return 1
		}
		defer os.Remove(o.stats)
		g.Go(func() error { return sw.ServeStats(ctx, ln) })
	}
	if o.metrics != "" {
		ln, err := metricserver.Listen(o.metrics)
		if err != nil {
			log.Error("metrics endpoint", "err", err)
			return 1
		}
		reg := metricsRegistry(sw)
		g.Go(func() error { return metricserver.Serve(ctx, ln, reg, log.With("part", "metrics")) })
	}
	g.Go(func() error { return sw.Run(ctx) })
	g.Go(func() error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-usr1:
				for _, p := range sw.Stats().Ports {
					log.Info("stats", "iface", p.Name, "trusted", p.Trusted, "rx_frames", p.RxFrames,
						"passed", p.Passed, "dropped", p.Dropped, "drops", p.Drops, "server_messages", p.ServerMessages,
						"tx_frames", p.TxFrames, "tx_busy", p.TxBusy, "tx_errors", p.TxErrors, "log_suppressed", p.LogSuppressed)
				}
			}
		}
	})
	// Run returning ends ctx for the others through the errgroup only on
	// error; on a clean return (signal) ctx is already done.
	if err := g.Wait(); err != nil {
		log.Error("dhcp6-shield stopped", "err", err)
		return 1
	}
	log.Info("dhcp6-shield stopped")
	return 0
}
