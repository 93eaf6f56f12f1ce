//go:build addrreg_faultinject

package main

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/addrreg/addrreg/registrar"
)

// faultInjection, in test builds only (-tags addrreg_faultinject): SIGUSR2
// closes the registrar's socket under the running daemon, as a bug or a
// kernel fault would, without cancelling anything. The end-to-end test
// then checks that addrregd exits non-zero at once rather than run deaf.
func faultInjection(reg *registrar.Registrar, log *slog.Logger) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR2)
	go func() {
		<-c
		log.Warn("fault injection: closing the registrar's socket")
		reg.Close()
	}()
}
