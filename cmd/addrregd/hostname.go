package main

import (
	"context"
	"log/slog"

	"github.com/addrreg/addrreg/internal/hostname"
	"github.com/addrreg/addrreg/registrar"
)

// hostNames is the agent's NameSource: the host's name, as sent in the
// Client FQDN option, each time the kernel's changes.
type hostNames struct {
	w   *hostname.Watcher
	log *slog.Logger
}

func (h hostNames) Next(ctx context.Context) (string, error) {
	name, err := h.w.Next(ctx)
	if err != nil {
		return "", err
	}
	fqdn := h.sendable(name)
	h.log.Info("host name changed", "hostname", name, "fqdn", fqdn)
	return fqdn, nil
}

// sendable is the name to send for the host name name: none for no name
// or a localhost one (as systemd-networkd and NetworkManager do), none for
// one the option cannot carry (a label over 63 octets), else the name as
// it is: qualified if it has a dot, a single label sent as a partial name
// for the server to complete (RFC 4704 §4.2).
func (h hostNames) sendable(name string) string {
	if !hostname.Specific(name) {
		return ""
	}
	if err := registrar.ValidateFQDN(name); err != nil {
		h.log.Warn("host name cannot be sent in a Client FQDN option: sending none", "hostname", name, "err", err)
		return ""
	}
	return name
}
