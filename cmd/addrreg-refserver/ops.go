package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/addrreg/addrreg/internal/ctlsock"
	"github.com/addrreg/addrreg/internal/ddns"
	"github.com/addrreg/addrreg/internal/metricserver"
	"github.com/addrreg/addrreg/internal/refserver"
)

// opsFlags are the operator-facing endpoints beside the server.
type opsFlags struct {
	controlSocket string // "" none
	metricsListen string // "" none
	check         bool   // --check: validate and exit
	showVersion   bool   // --version
	// ddns: DNS updates (--ddns-*), nil when off; updater is made from it.
	ddns    *ddns.Config
	updater *ddns.Updater
}

// runWithOps runs srv until ctx ends, with its control socket (history
// queries) and metrics endpoint. Neither endpoint failing stops the server:
// registrations matter more; the failure is logged.
func runWithOps(ctx context.Context, srv *refserver.Server, o opsFlags, log *slog.Logger) error {
	var g errgroup.Group
	auxCtx, stopAux := context.WithCancel(ctx)
	defer func() { stopAux(); _ = g.Wait() }()
	if o.metricsListen != "" {
		ln, err := metricserver.Listen(o.metricsListen)
		if err != nil {
			return err
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg.MustRegister(srv.Collectors()...)
		if o.updater != nil {
			reg.MustRegister(o.updater.Collectors()...)
		}
		g.Go(func() error {
			if err := metricserver.Serve(auxCtx, ln, reg, log.With("part", "metrics")); err != nil {
				log.Error("metrics endpoint stopped", "err", err)
			}
			return nil
		})
	}
	if o.controlSocket != "" {
		ln, err := ctlsock.Listen(o.controlSocket, "")
		if err != nil {
			log.Error("control socket unavailable: 'history' will not answer", "path", o.controlSocket, "err", err)
		} else {
			g.Go(func() error {
				defer ln.Close() // removes the socket file
				if err := srv.ServeControl(auxCtx, ln); err != nil {
					log.Error("control socket stopped", "err", err)
				}
				return nil
			})
		}
	}
	if o.updater != nil {
		// Stopped only once the server has returned, so that its last
		// commits are queued and written to the updater's journal.
		dctx, stopDNS := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := o.updater.Run(dctx); err != nil {
				log.Error("DNS updates stopped", "err", err)
			}
		}()
		defer func() { stopDNS(); <-done }()
	}
	return srv.Run(ctx)
}
