package image_test

import (
	"strings"
	"testing"
)

// A kernel panic before init is told apart from a later one (a boot that
// got as far as systemd is not booted again: what went wrong there is the
// test's business).
func TestPanicBeforeInit(t *testing.T) {
	gpf := "[    0.924706] Oops: general protection fault, maybe for address 0x10: 0000 [#1] PREEMPT SMP NOPTI\n" +
		"[    0.924706] RIP: 0010:text_poke_early+0x68/0xa0\n" +
		"[    0.924706] Kernel panic - not syncing: Attempted to kill the idle task!\n"
	timer := "[    0.016000] ..MP-BIOS bug: 8254 timer not connected to IO-APIC\n" +
		"[    0.052000] Kernel panic - not syncing: IO-APIC + timer doesn't work!  Boot with apic=debug\n" +
		"[    0.052000] CPU: 0 UID: 0 PID: 0 Comm: swapper/0 Not tainted 6.12.117+deb13-amd64 #1\n"
	late := "[    3.100000] systemd[1]: Failed to start foo.service.\n" +
		"[    9.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n"
	for _, tc := range []struct {
		name, console, want string
	}{
		{"GPF in early boot", gpf, "Oops: general protection fault"},
		{"IO-APIC timer check", timer, "Kernel panic - not syncing: IO-APIC + timer doesn't work!"},
		{"after init started", late, ""},
		{"no panic", "[    0.000000] Linux version 6.12\n", ""},
	} {
		got := panicBeforeInit(tc.console)
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s: panicBeforeInit = %q, want one with %q", tc.name, got, tc.want)
		}
	}
	if got := panicBeforeInit(gpf); !strings.HasPrefix(got, "[    0.924706] Oops:") || !strings.HasSuffix(got, "idle task!") {
		t.Errorf("GPF: %q, want from the Oops line to the panic line", got)
	}
}
