//go:build !addrreg_faultinject

package main

import (
	"log/slog"

	"github.com/addrreg/addrreg/registrar"
)

// faultInjection is a no-op in the product. Built with the
// addrreg_faultinject tag (tests only), it lets a test close the
// registrar's socket under the daemon.
func faultInjection(*registrar.Registrar, *slog.Logger) {}
