package packaging

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/addrreg/addrreg/test/topo"
)

// sandboxFlag, as the test binary's first argument, makes it the sandbox
// wrapper (TestMain): "-addrreg-sandbox AF_X,AF_Y program args…" runs
// program with socket(2) refused, EAFNOSUPPORT, for every other family,
// as systemd's RestrictAddressFamilies= does (with a seccomp filter too).
const sandboxFlag = "-addrreg-sandbox"

// afNumbers are the families the units name.
var afNumbers = map[string]uint32{
	"AF_UNIX": unix.AF_UNIX, "AF_INET": unix.AF_INET, "AF_INET6": unix.AF_INET6,
	"AF_NETLINK": unix.AF_NETLINK, "AF_PACKET": unix.AF_PACKET,
}

// sandboxExec installs the filter on this thread and execs the program,
// which inherits it (with no_new_privs, as NoNewPrivileges=yes).
func sandboxExec(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: "+sandboxFlag+" AF_X,AF_Y program [args]")
		return 2
	}
	var fams []uint32
	for _, f := range strings.Split(args[0], ",") {
		n, ok := afNumbers[f]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown family %s\n", f)
			return 2
		}
		fams = append(fams, n)
	}
	k := len(fams)
	const (
		ldAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret   = unix.BPF_RET | unix.BPF_K
	)
	// struct seccomp_data: nr at 0, args[0] at 16 (its low word first on
	// the little-endian amd64 and arm64).
	prog := []unix.SockFilter{
		{Code: ldAbs, K: 0},
		{Code: jeq, K: unix.SYS_SOCKET, Jt: 0, Jf: uint8(k + 2)},
		{Code: ldAbs, K: 16},
	}
	for i, f := range fams {
		prog = append(prog, unix.SockFilter{Code: jeq, K: f, Jt: uint8(k - i), Jf: 0})
	}
	prog = append(prog,
		unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EAFNOSUPPORT)},
		unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ALLOW})
	runtime.LockOSThread() // the filter is this thread's; execve keeps it
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "no_new_privs: %v\n", err)
		return 1
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&fprog)), 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "seccomp: %v\n", err)
		return 1
	}
	err := unix.Exec(args[1], args[1:], os.Environ())
	fmt.Fprintf(os.Stderr, "exec %s: %v\n", args[1], err)
	return 1
}

// TestSandboxWrapper: the wrapper refuses what it should (else the test
// below would prove nothing).
func TestSandboxWrapper(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fams string
		ok   bool
	}{{"AF_INET6,AF_INET,AF_UNIX", true}, {"AF_INET,AF_UNIX", false}} {
		out, err := exec.Command(exe, sandboxFlag, tc.fams, exe, "-test.run=^TestSandboxProbe$", "-test.v").CombinedOutput()
		if got := err == nil; got != tc.ok {
			t.Errorf("families %s: AF_INET6 socket ok=%v, want %v:\n%s", tc.fams, got, tc.ok, out)
		}
	}
}

// TestSandboxProbe opens an AF_INET6 socket; TestSandboxWrapper runs it
// under the wrapper (outside it, it passes trivially).
func TestSandboxProbe(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("AF_INET6 socket: %v", err)
	}
	unix.Close(fd)
}

// TestSandboxMetrics starts each daemon, in a network namespace, under the
// address families its unit allows (RestrictAddressFamilies=, emulated by
// the wrapper: systemd-run needs systemd as PID 1, which a CI container
// does not have), with --metrics-listen at every form its man page shows,
// and scrapes it there.
func TestSandboxMetrics(t *testing.T) {
	topo.RequireRoot(t)
	top := repo(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	duid := "000400112233445566778899aabbccddeeff"
	for _, c := range []struct {
		cmd  string
		args func(t *testing.T, nd *topo.Node) []string
	}{
		{"addrregd", func(t *testing.T, nd *topo.Node) []string {
			return []string{"--duid", duid, "--state-file", "", "--control-socket", "", "--enable=false"}
		}},
		{"addrreg-refserver", func(t *testing.T, nd *topo.Node) []string {
			return []string{"-i", "eth0", "--db", filepath.Join(t.TempDir(), "b.db"), "--control-socket", ""}
		}},
		{"dhcp6-shield", func(t *testing.T, nd *topo.Node) []string {
			nd.MustExec(t, "ip", "link", "add", "sa", "type", "veth", "peer", "name", "sb")
			nd.MustExec(t, "ip", "link", "set", "sa", "up")
			nd.MustExec(t, "ip", "link", "set", "sb", "up")
			return []string{"--trusted", "sa", "--port", "sb"}
		}},
	} {
		t.Run(c.cmd, func(t *testing.T) {
			svc := unit(t, filepath.Join(top, "debian", c.cmd+".service"))
			fams := strings.Join(words(svc, "RestrictAddressFamilies"), ",")
			page, err := os.ReadFile(filepath.Join(top, "docs/man", c.cmd+".8.md"))
			if err != nil {
				t.Fatal(err)
			}
			_, para, _ := strings.Cut(string(page), "**--metrics-listen**")
			para, _, _ = strings.Cut(para, "\n\n")
			forms := metricsForms(para)
			if len(forms) == 0 {
				t.Fatal("no --metrics-listen forms in the man page")
			}
			bin := topo.BuildBinary(t, "./cmd/"+c.cmd)
			for _, form := range forms {
				n := topo.New(t)
				nd := n.Node("sbx")
				argv := append([]string{exe, sandboxFlag, fams, bin, "--metrics-listen", form}, c.args(t, nd)...)
				p := nd.Start(t, c.cmd, argv...)
				p.WaitOutput(t, "serving metrics", 20*time.Second)
				scrape := []string{form}
				if strings.HasPrefix(form, ":") {
					scrape = []string{"[::1]" + form, "127.0.0.1" + form}
				}
				for _, addr := range scrape {
					body := nd.Scrape(t, addr)
					if !strings.Contains(body, "\nprocess_start_time_seconds ") {
						t.Errorf("--metrics-listen %s, scraped at %s under RestrictAddressFamilies=%s: no process_start_time_seconds", form, addr, fams)
					}
				}
				t.Logf("--metrics-listen %s under RestrictAddressFamilies=%s: scraped", form, strings.ReplaceAll(fams, ",", " "))
				p.Stop()
			}
		})
	}
}
