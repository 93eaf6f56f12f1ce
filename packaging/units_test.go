package packaging

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/addrreg/addrreg/internal/metricserver"
)

// unit reads a systemd unit file: each key's values in order (a key given
// twice has two).
func unit(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", path, line)
		}
		u[k] = append(u[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// words is every value of key, split at spaces.
func words(u map[string][]string, key string) []string {
	var ws []string
	for _, v := range u[key] {
		ws = append(ws, strings.Fields(v)...)
	}
	return ws
}

// metricsForm matches a --metrics-listen example: [IPv6]:port,
// IPv4:port, or :port.
var metricsForm = regexp.MustCompile(`(\[[0-9A-Fa-f:.]+\]|\b\d{1,3}(?:\.\d{1,3}){3}|(?:^|[\s,(]))(:\d{2,5})\b`)

// metricsForms returns the metrics address examples in text (the --help
// line or the man page paragraph of --metrics-listen).
func metricsForms(text string) []string {
	var forms []string
	for _, m := range metricsForm.FindAllStringSubmatch(text, -1) {
		host := strings.TrimSpace(strings.TrimLeft(m[1], ",("))
		forms = append(forms, host+m[2])
	}
	return forms
}

// families returns the address families a daemon needs to listen on a
// --metrics-listen form: an IPv6 or IPv4 literal its own; no host, every
// address, a dual-stack [::] socket (IPv4 clients arrive v4-mapped): IPv6.
// (Go falls back to an IPv4-only socket when IPv6 ones cannot be made,
// which serves no IPv6 client.) TestSandboxMetrics scrapes each form.
func families(form string) []string {
	if strings.HasPrefix(form, "[") || strings.HasPrefix(form, ":") {
		return []string{"AF_INET6"}
	}
	return []string{"AF_INET"}
}

// TestUnitsAllowTheFlags: every metrics address form a command's --help or
// man page shows works under its unit (RestrictAddressFamilies= allows the
// family), the IPv6 and the IPv4 forms are both shown, and the control
// socket's unit listens where --control-socket's default says. Each unit:
// RestartPreventExitStatus=2 (a bad flag is not restarted), no
// ProcSubset=pid (it hides /proc/stat, and process_start_time_seconds with
// it), network-pre.target only pulled in by a unit ordered before it
// (systemd.special(7)), and only its own binary or /bin/sh run; the
// daemons link no os/exec, so they run no other program that would need a
// dependency.
func TestUnitsAllowTheFlags(t *testing.T) {
	top := repo(t)
	bin := t.TempDir()
	for _, c := range []struct {
		cmd     string
		need    []string // families besides the metrics ones
		control bool     // has a control socket unit
	}{
		{"addrregd", []string{"AF_INET6", "AF_NETLINK", "AF_UNIX"}, true},
		{"addrreg-refserver", []string{"AF_INET6", "AF_NETLINK", "AF_UNIX"}, true},
		{"dhcp6-shield", []string{"AF_PACKET", "AF_NETLINK", "AF_UNIX"}, false},
	} {
		t.Run(c.cmd, func(t *testing.T) {
			svc := unit(t, filepath.Join(top, "debian", c.cmd+".service"))
			allowed := words(svc, "RestrictAddressFamilies")
			if len(allowed) == 0 || strings.HasPrefix(allowed[0], "~") {
				t.Fatalf("RestrictAddressFamilies=%v: want an allow list", allowed)
			}
			exe := filepath.Join(bin, c.cmd)
			run(t, top, nil, "go", "build", "-o", exe, "./cmd/"+c.cmd)
			help := run(t, "", nil, exe, "--help")
			page, err := os.ReadFile(filepath.Join(top, "docs/man", c.cmd+".8.md"))
			if err != nil {
				t.Fatal(err)
			}
			sources := map[string]string{}
			for line := range strings.Lines(help) {
				if strings.Contains(line, "--metrics-listen") {
					sources["--help"] = line
				}
			}
			if _, para, ok := strings.Cut(string(page), "**--metrics-listen**"); ok {
				para, _, _ = strings.Cut(para, "\n\n")
				sources["man page"] = para
			}
			if len(sources) != 2 {
				t.Fatalf("--metrics-listen in --help and man page: found only %v", sources)
			}
			for where, text := range sources {
				forms := metricsForms(text)
				has := func(prefix string) bool {
					return slices.ContainsFunc(forms, func(f string) bool { return strings.HasPrefix(f, prefix) })
				}
				if !has("[") || !has("127.") {
					t.Errorf("%s shows metrics address forms %q: want an IPv6 and an IPv4 example", where, forms)
				}
				for _, f := range forms {
					if err := metricserver.CheckAddr(f); err != nil {
						t.Errorf("%s shows %q, which --metrics-listen refuses: %v", where, f, err)
					}
					for _, fam := range families(f) {
						if !slices.Contains(allowed, fam) {
							t.Errorf("%s shows --metrics-listen %s, which needs %s: RestrictAddressFamilies=%s forbids it",
								where, f, fam, strings.Join(allowed, " "))
						}
					}
				}
			}
			for _, fam := range c.need {
				if !slices.Contains(allowed, fam) {
					t.Errorf("RestrictAddressFamilies= lacks %s", fam)
				}
			}

			if !slices.Contains(words(svc, "RestartPreventExitStatus"), "2") {
				t.Error("no RestartPreventExitStatus=2: a bad flag (exit 2) is restarted until the start limit")
			}
			if slices.Contains(svc["ProcSubset"], "pid") {
				t.Error("ProcSubset=pid hides /proc/stat: process_start_time_seconds would be missing from the metrics")
			}
			if slices.Contains(words(svc, "Wants"), "network-pre.target") && !slices.Contains(words(svc, "Before"), "network-pre.target") {
				t.Error("Wants=network-pre.target without Before=network-pre.target: systemd.special(7) keeps it for units that run before the network is configured")
			}
			for _, k := range []string{"ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost"} {
				for _, v := range svc[k] {
					prog := strings.TrimLeft(strings.Fields(v)[0], "-@:+!")
					if prog != "/usr/sbin/"+c.cmd && prog != "/bin/sh" {
						t.Errorf("%s=%s runs %s: not the package's own program nor Essential's /bin/sh", k, v, prog)
					}
				}
			}
			list := exec.Command("go", "list", "-deps", "./cmd/"+c.cmd)
			list.Dir = top
			deps, err := list.Output()
			if err != nil {
				t.Fatalf("go list -deps: %v", err)
			}
			if slices.Contains(strings.Fields(string(deps)), "os/exec") {
				t.Error("links os/exec: a program it runs must be a declared dependency (and allowed by the unit)")
			}

			sockPath := filepath.Join(top, "debian", c.cmd+".socket")
			if !c.control {
				if _, err := os.Stat(sockPath); err == nil {
					t.Errorf("%s: unexpected", sockPath)
				}
				return
			}
			m := regexp.MustCompile(`--control-socket \S+ +.*\(default "([^"]+)"\)`).FindStringSubmatch(help)
			if m == nil {
				m = regexp.MustCompile(`--control-socket.*default:? (/\S+?)[)"]`).FindStringSubmatch(help)
			}
			if m == nil {
				t.Fatalf("no --control-socket default in --help:\n%s", help)
			}
			sock := unit(t, sockPath)
			if got := sock["ListenStream"]; !slices.Equal(got, []string{m[1]}) {
				t.Errorf("%s.socket ListenStream=%v, want the --control-socket default %s", c.cmd, got, m[1])
			}
			if mode := sock["SocketMode"]; !slices.Equal(mode, []string{"0600"}) {
				t.Errorf("%s.socket SocketMode=%v, want 0600 (root only unless SocketGroup= is given)", c.cmd, mode)
			}
			if !slices.Contains(words(sock, "PartOf"), c.cmd+".service") {
				t.Errorf("%s.socket has no PartOf=%s.service: a query would start a stopped daemon", c.cmd, c.cmd)
			}
			if !slices.Contains(words(svc, "Wants"), c.cmd+".socket") || !slices.Contains(words(svc, "After"), c.cmd+".socket") {
				t.Errorf("%s.service does not Want and come After %s.socket", c.cmd, c.cmd)
			}
			if len(svc["RuntimeDirectory"]) > 0 {
				t.Errorf("RuntimeDirectory=%v: systemd would chown the socket unit's socket to the dynamic user", svc["RuntimeDirectory"])
			}
		})
	}
}
