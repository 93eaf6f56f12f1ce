package image_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/addrreg/addrreg/test/proctest"
	"github.com/addrreg/addrreg/test/topo"
)

// Generous deadlines: a Debian kernel and systemd boot in tens of seconds
// under TCG on an idle machine, and in minutes on a busy one.
const (
	bootTimeout    = 15 * time.Minute // QEMU start → control channel ready
	serviceTimeout = 10 * time.Minute // → addrregd active, addresses, bindings
	commandTimeout = 5 * time.Minute  // one command in the guest
	pollInterval   = 3 * time.Second  // between two looks into the guest (each costs it CPU)
)

// imageFiles is a built image: rootfs.img, vmlinuz, initrd.img, manifest.
type imageFiles struct {
	suite  string // the Debian release: bookworm, trixie
	dir    string
	rootfs string
}

// imageSuites are the Debian releases the test boots, as make image builds
// them (IMAGE_SUITES, which make test passes on as ADDRREG_IMAGE_SUITES):
// each in a directory of its name under the image directory. Default: both.
func imageSuites() []string {
	if s := strings.Fields(os.Getenv("ADDRREG_IMAGE_SUITES")); len(s) > 0 {
		return s
	}
	return []string{"bookworm", "trixie"}
}

// builtImages returns the images `make image` built, by suite: those in
// ADDRREG_IMAGE_DIR (make test sets it), else ones it builds now.
func builtImages(t *testing.T) map[string]imageFiles {
	t.Helper()
	dir := os.Getenv("ADDRREG_IMAGE_DIR")
	if dir == "" {
		dir = t.TempDir()
		start := time.Now()
		cmd := exec.Command("make", "-C", moduleRoot(t), "image", "IMAGE_DIR="+dir, "IMAGE_SUITES="+strings.Join(imageSuites(), " "))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make image: %v\n%s", err, out)
		}
		t.Logf("make image: %v", time.Since(start).Round(100*time.Millisecond))
	}
	imgs := map[string]imageFiles{}
	for _, suite := range imageSuites() {
		d := filepath.Join(dir, suite)
		img := imageFiles{suite: suite, dir: d, rootfs: filepath.Join(d, "rootfs.img")}
		for _, f := range []string{"rootfs.img", "vmlinuz", "initrd.img", "manifest"} {
			if _, err := os.Stat(filepath.Join(d, f)); err != nil {
				t.Fatalf("%s image in %s incomplete (make image): %v", suite, d, err)
			}
		}
		if b, err := os.ReadFile(filepath.Join(d, "manifest")); err == nil {
			t.Logf("%s image manifest:\n%s", suite, b)
		}
		imgs[suite] = img
	}
	return imgs
}

func moduleRoot(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("module root: no caller information")
	}
	return filepath.Dir(filepath.Dir(filepath.Dir(file))) // <root>/test/image/guest_test.go
}

// debugfs runs debugfs on an ext4 image file (no mount, no loop device).
func debugfs(t *testing.T, img string, args ...string) string {
	t.Helper()
	out, err := exec.Command("debugfs", append(args, img)...).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %v %s: %v\n%s", args, img, err, out)
	}
	// debugfs prints its banner ("debugfs 1.47.0 (…)") on stderr first.
	_, rest, _ := strings.Cut(string(out), "\n")
	return rest
}

// withDefault makes a variant of img whose /etc/default/addrregd sets
// ADDRREGD_OPTS to opts, as an image builder would: a sparse copy of the
// built file system with that one conffile edited (debugfs, no mount).
func withDefault(t *testing.T, img imageFiles, opts string) string {
	t.Helper()
	old := debugfs(t, img.rootfs, "-R", "cat /etc/default/addrregd")
	line := "ADDRREGD_OPTS=" + strconv.Quote(opts)
	re := regexp.MustCompile(`(?m)^ADDRREGD_OPTS=.*$`)
	content := re.ReplaceAllString(old, line)
	if !re.MatchString(old) {
		content = strings.TrimRight(old, "\n") + "\n" + line + "\n"
	}
	dir := t.TempDir()
	local := filepath.Join(dir, "addrregd.default")
	if err := os.WriteFile(local, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	variant := filepath.Join(dir, "rootfs.img")
	if out, err := exec.Command("cp", "--sparse=always", img.rootfs, variant).CombinedOutput(); err != nil {
		t.Fatalf("copy image: %v: %s", err, out)
	}
	cmds := filepath.Join(dir, "debugfs.cmds")
	script := fmt.Sprintf("rm /etc/default/addrregd\nwrite %s /etc/default/addrregd\nsif /etc/default/addrregd uid 0\nsif /etc/default/addrregd gid 0\n", local)
	if err := os.WriteFile(cmds, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	debugfs(t, variant, "-w", "-f", cmds)
	if got := debugfs(t, variant, "-R", "cat /etc/default/addrregd"); !strings.Contains(got, line) {
		t.Fatalf("variant's /etc/default/addrregd lacks %s:\n%s", line, got)
	}
	return variant
}

// guest is one QEMU boot of an image, on a tap of the test network.
type guest struct {
	t       *testing.T
	net     *topo.Net
	name    string
	mac     string
	tap     string
	img     imageFiles
	rootfs  string
	cmdline string
	console string
	qemu    *topo.Proc
	conn    net.Conn
	lines   chan string
	closed  chan struct{}
	booted  time.Time
	ready   bool          // the control channel answered once
	readyIn time.Duration // QEMU start → control channel
	panics  int           // boots lost to a kernel panic before userspace
}

// maxEarlyPanics bounds the boots again after a guest kernel panicked
// before it ran any of the image's programs (see waitReady).
const maxEarlyPanics = 2

// boot starts QEMU (TCG) in the switch namespace with a copy-on-write
// overlay over rootfs, the image's kernel and initrd, a virtio NIC on a new
// tap of the main segment, the console on a file and the control port on a
// socket. extra is appended to the kernel command line.
func boot(t *testing.T, n *topo.Net, img imageFiles, rootfs, name, mac, extra string) *guest {
	t.Helper()
	tap := "tap-" + name
	n.Main().AddTap(t, tap)
	// Quiet: under TCG every console character costs; the console still
	// shows warnings, errors and the initramfs's progress. A guest starved
	// of CPU on a busy machine must not fail its boot on systemd's 90 s
	// start timeouts or journald's 3 min watchdog, nor panic in the
	// kernel's IO-APIC timer check ("IO-APIC + timer doesn't work!", seen
	// with trixie's 6.12 on a loaded machine): no_timer_check, as virtual
	// machines' kernel command lines commonly have.
	cmdline := "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet loglevel=4 systemd.show_status=0 mitigations=off panic=-1 no_timer_check " +
		"systemd.default_timeout_start_sec=900 systemd.default_device_timeout_sec=900 systemd.service_watchdogs=0 " + extra
	g := &guest{t: t, net: n, name: name, mac: mac, tap: tap, img: img, rootfs: rootfs, cmdline: cmdline}
	t.Cleanup(func() {
		if t.Failed() && g.ready {
			g.diagnose()
		}
	})
	g.start()
	return g
}

// start runs QEMU for g (again, after a panic: a fresh overlay, the same
// tap and MAC) and connects its control port.
func (g *guest) start() {
	t := g.t
	t.Helper()
	dir := t.TempDir()
	overlay := filepath.Join(dir, "overlay.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", g.rootfs, overlay).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	sock := filepath.Join(dir, "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen %s: %v", sock, err)
	}
	defer ln.Close()
	console := filepath.Join(dir, "console.log")
	lines, closed := make(chan string, 256), make(chan struct{})
	g.console, g.lines, g.closed = console, lines, closed
	g.booted = time.Now()
	name := g.name
	if g.panics > 0 {
		name = fmt.Sprintf("%s-boot%d", g.name, g.panics+1)
	}
	g.qemu = g.net.Switch().Start(t, "qemu-"+name, "qemu-system-x86_64", "-accel", "tcg", "-m", "384", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", filepath.Join(g.img.dir, "vmlinuz"), "-initrd", filepath.Join(g.img.dir, "initrd.img"), "-append", g.cmdline,
		"-drive", "file="+overlay+",if=virtio,format=qcow2,cache=unsafe",
		"-netdev", "tap,id=n0,ifname="+g.tap+",script=no,downscript=no", "-device", "virtio-net-pci,netdev=n0,mac="+g.mac,
		"-device", "virtio-rng-pci",
		"-serial", "file:"+console,
		"-device", "virtio-serial-pci", "-chardev", "socket,id=ctl,path="+sock,
		"-device", "virtserialport,chardev=ctl,name=addrreg.control")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(console)
			t.Logf("--- console of %s ---\n%s", name, b)
		}
	})
	// QEMU connects to the control socket as it starts.
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	var conn net.Conn
	select {
	case c, ok := <-accepted:
		if !ok {
			t.Fatalf("%s: QEMU did not connect its control port", name)
		}
		conn = c
	case <-g.qemu.Done():
		t.Fatalf("%s: QEMU exited: %s", name, g.qemu.Output())
	case <-time.After(time.Minute):
		t.Fatalf("%s: QEMU did not connect its control port within a minute: %s", name, g.qemu.Output())
	}
	g.conn = conn
	t.Cleanup(func() {
		close(closed)
		conn.Close()
	})
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(conn)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-closed:
				return
			}
		}
	}()
}

// earlyPanic returns the console's kernel panic, if the guest's kernel
// panicked before it started init (panic=-1 and -no-reboot then end QEMU).
func (g *guest) earlyPanic() string {
	select {
	case <-g.qemu.Done():
	case <-time.After(10 * time.Second):
		return "" // QEMU still runs: not a panic
	}
	b, _ := os.ReadFile(g.console)
	return panicBeforeInit(string(b))
}

// panicBeforeInit returns the kernel panic on console c (from the Oops
// that caused it, if any, to the panic line) when nothing shows that init
// had started; "" otherwise.
func panicBeforeInit(c string) string {
	i := strings.Index(c, "Kernel panic - not syncing")
	if i < 0 || strings.Contains(c[:i], "Run /sbin/init") || strings.Contains(c[:i], "systemd[1]") {
		return ""
	}
	start := max(strings.LastIndex(c[:i], "\n")+1, 0)
	if j := strings.Index(c, "Oops:"); j >= 0 && j < i {
		start = max(strings.LastIndex(c[:j], "\n")+1, 0)
	}
	end := strings.Index(c[i:], "\n")
	if end < 0 {
		end = len(c) - i
	}
	return strings.TrimSpace(c[start : i+end])
}

// cpuTime is the CPU time QEMU has used so far (user + system): on a busy
// machine a better measure of the guest's cost than the wall time.
func (g *guest) cpuTime() time.Duration {
	d, err := proctest.ReadCPU(g.qemu.Pid())
	if err != nil {
		return 0
	}
	return d
}

// next returns the next line from the control port.
func (g *guest) next(deadline time.Time) (string, error) {
	select {
	case l, ok := <-g.lines:
		if !ok {
			return "", fmt.Errorf("%s: control port closed", g.name)
		}
		return l, nil
	case <-g.qemu.Done():
		return "", fmt.Errorf("%s: QEMU exited: %s", g.name, g.qemu.Output())
	case <-time.After(time.Until(deadline)):
		return "", fmt.Errorf("%s: guest silent until the deadline", g.name)
	}
}

// waitReady waits until the guest's control service announces itself.
// A guest whose kernel panicked before init ran is booted again, at most
// maxEarlyPanics times, and the test says so: trixie's 6.12 kernel has,
// on a loaded machine, now and then died under QEMU 7.2's TCG in early
// boot (a general protection fault in text_poke_early's iret), before
// anything of the image or of addrregd ran; what the test checks starts
// after that.
func (g *guest) waitReady() time.Duration {
	g.t.Helper()
	if g.ready {
		return g.readyIn
	}
	deadline := time.Now().Add(bootTimeout)
	for {
		l, err := g.next(deadline)
		if err != nil {
			if p := g.earlyPanic(); p != "" && g.panics < maxEarlyPanics {
				g.panics++
				g.t.Logf("%s: the guest kernel panicked in early boot, before init (QEMU TCG); booting it again (%d of %d):\n%s",
					g.name, g.panics, maxEarlyPanics, p)
				g.start()
				continue
			}
			g.t.Fatalf("%v (waiting %v for the guest to boot)", err, bootTimeout)
		}
		if l == "@@addrreg-control ready" {
			g.ready, g.readyIn = true, time.Since(g.booted)
			return g.readyIn
		}
	}
}

// run runs a shell command line in the guest and returns its output and
// exit status.
func (g *guest) run(cmd string) (string, int) {
	g.t.Helper()
	out, rc, err := g.runTimeout(cmd, commandTimeout)
	if err != nil {
		g.t.Fatal(err)
	}
	return out, rc
}

func (g *guest) runTimeout(cmd string, timeout time.Duration) (string, int, error) {
	if strings.Contains(cmd, "\n") {
		return "", 0, fmt.Errorf("guest command must be one line: %q", cmd)
	}
	if _, err := fmt.Fprintf(g.conn, "%s\n", cmd); err != nil {
		return "", 0, fmt.Errorf("%s: send %q: %w", g.name, cmd, err)
	}
	deadline := time.Now().Add(timeout)
	var out []string
	for {
		l, err := g.next(deadline)
		if err != nil {
			return "", 0, fmt.Errorf("%w (running %q)", err, cmd)
		}
		if l == "@@addrreg-control ready" { // the control service restarted: the command is lost
			return "", 0, fmt.Errorf("%s: control service restarted while running %q", g.name, cmd)
		}
		if rc, ok := strings.CutPrefix(l, "@@addrreg-done "); ok {
			n, _ := strconv.Atoi(rc)
			return strings.Join(out, "\n"), n, nil
		}
		out = append(out, l)
	}
}

// diagnose logs what the guest's network and addrregd show, for a failed
// test (while the guest still runs).
func (g *guest) diagnose() {
	g.t.Helper()
	for _, cmd := range []string{"ip -6 addr show dev eth0", "addrregd status",
		"journalctl -b -o cat -u addrregd | tail -n 40",
		"journalctl -b -o short-monotonic -u systemd-networkd -u NetworkManager | tail -n 40"} {
		out, rc, err := g.runTimeout(cmd, time.Minute)
		if err != nil {
			g.t.Logf("%s: %v", g.name, err)
			return
		}
		g.t.Logf("%s: $ %s (exit %d)\n%s", g.name, cmd, rc, out)
	}
}

// must runs cmd in the guest and fails the test unless it exits 0.
func (g *guest) must(cmd string) string {
	g.t.Helper()
	out, rc := g.run(cmd)
	if rc != 0 {
		g.t.Fatalf("%s: %q exited %d: %s", g.name, cmd, rc, out)
	}
	return out
}

// until polls cond every pollInterval until it reports done or timeout passes.
func until(t *testing.T, timeout time.Duration, what string, cond func() (done bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, state := cond()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last: %s", what, timeout, state)
		}
		time.Sleep(pollInterval)
	}
}

// guestAddr is one address of `ip -j -6 addr` (iproute2 names the flags).
type guestAddr struct {
	Local      string `json:"local"`
	Prefixlen  int    `json:"prefixlen"`
	Scope      string `json:"scope"`
	Temporary  bool   `json:"temporary"`
	MngTmpAddr bool   `json:"mngtmpaddr"`
	Tentative  bool   `json:"tentative"`
	DADFailed  bool   `json:"dadfailed"`
	Valid      uint32 `json:"valid_life_time"`
	Preferred  uint32 `json:"preferred_life_time"`
}

// addrs returns the global IPv6 addresses on ifname in the guest.
func (g *guest) addrs(ifname string) []guestAddr {
	g.t.Helper()
	out := g.must("ip -j -6 addr show dev " + ifname + " scope global")
	var links []struct {
		AddrInfo []guestAddr `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		g.t.Fatalf("%s: ip -j addr: %v: %s", g.name, err, out)
	}
	var as []guestAddr
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if a.Local != "" { // iproute2 6.1 prints {} for each address the scope filter drops
				as = append(as, a)
			}
		}
	}
	return as
}
