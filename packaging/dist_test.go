package packaging

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/addrreg/addrreg/test/topo"
)

var (
	pkgs   = []string{"addrregd", "addrreg-refserver", "dhcp6-shield"}
	arches = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
)

// repo is the repository's top directory.
func repo(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// need skips a test whose tools are missing, except under CI, where
// `make deps` installs them and a missing one is a failure.
func need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not found: make deps installs it (DEB_PKGS)", tool)
			}
			t.Skipf("%s not found (make deps installs it)", tool)
		}
	}
}

func run(t testing.TB, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var dist struct {
	once    sync.Once
	dir     string // packages and tarballs
	version string
	failed  string
}

// builtDist runs `make dist` once per test binary, into a temporary
// directory, and returns it with the version it built.
func builtDist(t *testing.T) (string, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the packages of both architectures (minutes): make test runs it")
	}
	need(t, "dpkg-buildpackage", "dh", "go-md2man", "fakeroot")
	dist.once.Do(func() {
		top := repo(t)
		tmp, err := os.MkdirTemp("", "addrreg-dist-")
		if err != nil {
			dist.failed = err.Error()
			return
		}
		dist.dir = filepath.Join(tmp, "dist")
		dist.version = strings.TrimSpace(run(t, top, nil, "make", "-s", "version"))
		cmd := exec.Command("make", "-s", "dist", "VERSION="+dist.version)
		cmd.Dir = top
		cmd.Env = append(os.Environ(), "DIST="+dist.dir, "PKGBUILD="+filepath.Join(tmp, "build"), "RPMBUILD="+filepath.Join(tmp, "rpmbuild"))
		if out, err := cmd.CombinedOutput(); err != nil {
			dist.failed = fmt.Sprintf("make dist: %v\n%s", err, out)
		}
	})
	if dist.failed != "" {
		t.Fatal(dist.failed)
	}
	return dist.dir, dist.version
}

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == sandboxFlag {
		os.Exit(sandboxExec(os.Args[2:])) // sandbox_test.go
	}
	code := m.Run()
	if dist.dir != "" {
		os.RemoveAll(filepath.Dir(dist.dir))
	}
	os.Exit(code)
}

func debPath(dir, pkg, version, arch string) string {
	return filepath.Join(dir, fmt.Sprintf("%s_%s_%s.deb", pkg, version, arch))
}

// extract unpacks a package into a temporary directory.
func extract(t *testing.T, deb string) string {
	t.Helper()
	root := t.TempDir()
	run(t, "", nil, "dpkg-deb", "-x", deb, root)
	return root
}

func field(t *testing.T, deb, name string) string {
	return strings.TrimSpace(run(t, "", nil, "dpkg-deb", "-f", deb, name))
}

// lintian --pedantic reports no error and no warning; what it would
// report is overridden in debian/*.lintian-overrides, each override with a
// comment saying why.
func TestLintian(t *testing.T) {
	dir, version := builtDist(t)
	need(t, "lintian")
	var debs []string
	for _, p := range pkgs {
		for arch := range arches {
			debs = append(debs, debPath(dir, p, version, arch))
		}
	}
	slices.Sort(debs)
	cmd := exec.Command("lintian", append([]string{"--pedantic", "--display-info", "--tag-display-limit", "0"}, debs...)...)
	out, err := cmd.CombinedOutput()
	t.Logf("lintian --pedantic:\n%s", out)
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			t.Errorf("lintian: %s", strings.TrimSpace(line))
		}
	}
	if err != nil && !t.Failed() {
		t.Errorf("lintian failed: %v", err)
	}
	overrides, _ := filepath.Glob(filepath.Join(repo(t), "debian", "*.lintian-overrides"))
	for _, f := range overrides {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		prev := ""
		for line := range strings.Lines(string(b)) {
			line = strings.TrimSpace(line)
			if line != "" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(prev, "#") {
				t.Errorf("%s: override %q has no comment saying why", filepath.Base(f), line)
			}
			prev = line
		}
	}
}

// Each package is labelled with the architecture its binary's ELF header
// says, and the binary is static (no interpreter, no shared libraries).
func TestArchitectureAndStatic(t *testing.T) {
	dir, version := builtDist(t)
	for _, p := range pkgs {
		for arch, machine := range arches {
			deb := debPath(dir, p, version, arch)
			if got := field(t, deb, "Architecture"); got != arch {
				t.Errorf("%s: Architecture %s, want %s", filepath.Base(deb), got, arch)
			}
			bin := filepath.Join(extract(t, deb), "usr/sbin", p)
			f, err := elf.Open(bin)
			if err != nil {
				t.Fatalf("%s: %v", filepath.Base(deb), err)
			}
			if f.Machine != machine {
				t.Errorf("%s: ELF machine %v in a package for %s (want %v)", filepath.Base(deb), f.Machine, arch, machine)
			}
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
					t.Errorf("%s: %s has %v: not static", filepath.Base(deb), p, prog.Type)
				}
			}
			if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
				t.Errorf("%s: %s needs %v", filepath.Base(deb), p, libs)
			}
			f.Close()
		}
	}
	out := run(t, "", nil, "file", filepath.Join(extract(t, debPath(dir, "addrregd", version, "arm64")), "usr/sbin/addrregd"))
	if !strings.Contains(out, "ARM aarch64") || !strings.Contains(out, "statically linked") {
		t.Errorf("file: %s", out)
	}
}

// What each package holds: binary, unit, /etc/default conffile, man page,
// changelog of this version, DEP-5 copyright, md5sums of every file; and
// the debhelper maintainer scripts.
func TestContents(t *testing.T) {
	dir, version := builtDist(t)
	for _, p := range pkgs {
		deb := debPath(dir, p, version, "amd64")
		root := extract(t, deb)
		unit := "lib/systemd/system/" + p + ".service"
		if _, err := os.Stat(filepath.Join(root, unit)); err != nil {
			unit = "usr/" + unit
		}
		files := []string{"usr/sbin/" + p, unit, "etc/default/" + p, "usr/share/man/man8/" + p + ".8.gz",
			"usr/share/doc/" + p + "/changelog.gz", "usr/share/doc/" + p + "/copyright"}
		for _, f := range files {
			if _, err := os.Stat(filepath.Join(root, f)); err != nil {
				t.Errorf("%s: no %s", p, f)
			}
		}
		ctl := t.TempDir()
		run(t, "", nil, "dpkg-deb", "-e", deb, ctl)
		if b, _ := os.ReadFile(filepath.Join(ctl, "conffiles")); strings.TrimSpace(string(b)) != "/etc/default/"+p {
			t.Errorf("%s: conffiles %q, want /etc/default/%s", p, b, p)
		}
		md5, _ := os.ReadFile(filepath.Join(ctl, "md5sums"))
		for _, f := range files[:4] {
			if f != "etc/default/"+p && !strings.Contains(string(md5), " "+f+"\n") {
				t.Errorf("%s: md5sums has no %s", p, f)
			}
		}
		post, _ := os.ReadFile(filepath.Join(ctl, "postinst"))
		if !strings.Contains(string(post), "deb-systemd-helper") || strings.Contains(string(post), "systemctl enable") {
			t.Errorf("%s: postinst is not debhelper's:\n%s", p, post)
		}
		cr, _ := os.ReadFile(filepath.Join(root, "usr/share/doc", p, "copyright"))
		if !strings.HasPrefix(string(cr), "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n") {
			t.Errorf("%s: copyright is not DEP-5", p)
		}
		if top := changelogTop(t, filepath.Join(root, "usr/share/doc", p, "changelog.gz")); !strings.Contains(top, "("+version+")") {
			t.Errorf("%s: changelog starts %q, want version %s", p, top, version)
		}
	}
}

func changelogTop(t *testing.T, path string) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(z).ReadString('\n')
	return line
}

// addrregd --version prints the package's version.
func TestVersionFlagMatchesPackage(t *testing.T) {
	dir, version := builtDist(t)
	arch := strings.TrimSpace(run(t, "", nil, "dpkg", "--print-architecture"))
	if _, ok := arches[arch]; !ok {
		t.Skipf("no package for %s", arch)
	}
	deb := debPath(dir, "addrregd", version, arch)
	out := run(t, "", nil, filepath.Join(extract(t, deb), "usr/sbin/addrregd"), "--version")
	if want := "addrregd " + field(t, deb, "Version") + "\n"; out != want {
		t.Errorf("--version printed %q, want %q", out, want)
	}
}

// The tarball for other distributions unpacks into one directory,
// addrreg-VERSION-ARCH/, with install.sh, uninstall.sh and the three
// packages' files (and OpenRC scripts) under files/; no lintian overrides.
func TestTarball(t *testing.T) {
	dir, version := builtDist(t)
	for arch := range arches {
		name := fmt.Sprintf("addrreg-%s-%s", version, arch)
		tgz := filepath.Join(dir, name+".tar.gz")
		list := run(t, "", nil, "tar", "-tzf", tgz)
		for line := range strings.Lines(list) {
			if !strings.HasPrefix(line, name+"/") {
				t.Errorf("%s: member %s outside %s/", filepath.Base(tgz), strings.TrimSpace(line), name)
			}
			if strings.Contains(line, "lintian") {
				t.Errorf("%s: %s: lintian overrides are Debian's", filepath.Base(tgz), strings.TrimSpace(line))
			}
		}
		want := []string{"install.sh", "uninstall.sh", "VERSION"}
		for _, p := range pkgs {
			want = append(want, "files/usr/sbin/"+p, "files/etc/default/"+p, "files/usr/share/man/man8/"+p+".8.gz",
				"files/usr/lib/systemd/system/"+p+".service", "files/etc/init.d/"+p, "files/usr/share/doc/"+p+"/copyright")
		}
		for _, f := range want {
			if !strings.Contains(list, name+"/"+f+"\n") {
				t.Errorf("%s: no %s/%s", filepath.Base(tgz), name, f)
			}
		}
	}
}

// Building again, from another directory with an empty build cache, gives
// the same bytes for every binary of both architectures.
func TestReproducible(t *testing.T) {
	dir, version := builtDist(t)
	top := repo(t)
	cache := t.TempDir()
	for arch := range arches {
		out := t.TempDir()
		run(t, top, []string{"GOCACHE=" + cache}, "make", "-s", "static", "GOARCH="+arch, "OUT="+out, "VERSION="+version)
		for _, p := range pkgs {
			shipped, err := os.ReadFile(filepath.Join(extract(t, debPath(dir, p, version, arch)), "usr/sbin", p))
			if err != nil {
				t.Fatal(err)
			}
			again, err := os.ReadFile(filepath.Join(out, p))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(shipped, again) {
				t.Errorf("%s/%s: a second build differs (%d and %d bytes)", arch, p, len(shipped), len(again))
			}
		}
	}
}

// The units score at most 2.0 in systemd-analyze security (offline, from
// debian/); verification against an installed system is in the chroot test.
func TestUnitSecurity(t *testing.T) {
	need(t, "systemd-analyze")
	for _, p := range pkgs {
		out, _ := exec.Command("systemd-analyze", "security", "--offline=true", filepath.Join(repo(t), "debian", p+".service")).CombinedOutput()
		score := securityScore(t, p, string(out))
		t.Logf("%s.service: exposure %.1f", p, score)
		if score > 2.0 {
			t.Errorf("%s.service: exposure %.1f, want at most 2.0:\n%s", p, score, out)
		}
	}
}

var scoreRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

func securityScore(t *testing.T, unit, out string) float64 {
	t.Helper()
	m := scoreRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s: no score in:\n%s", unit, out)
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// dpkg -i in a chroot without systemd running, as an image build does:
// addrregd is enabled, the server and the shield are not; the installed
// units verify and score at most 2.0; an administrator's disable survives
// an upgrade; purge removes the configuration and the state.
func TestMaintainerScriptsInChroot(t *testing.T) {
	topo.RequireRoot(t)
	dir, version := builtDist(t)
	need(t, "unshare", "chroot", "systemd-analyze", "man")
	arch := strings.TrimSpace(run(t, "", nil, "dpkg", "--print-architecture"))
	if _, ok := arches[arch]; !ok {
		t.Skipf("no package for %s", arch)
	}
	args := []string{"--mount", "--propagation", "private", "bash", "testdata/chroot-maint.sh", t.TempDir()}
	for _, p := range pkgs {
		args = append(args, debPath(dir, p, version, arch))
	}
	cmd := exec.Command("unshare", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("chroot-maint.sh: %v\n%s", err, out)
	}
	want := []string{"no-systemd-running", "addrregd-enabled-on-install", "refserver-not-enabled", "shield-not-enabled",
		"conffile-installed", "verify-addrregd", "verify-addrreg-refserver", "verify-dhcp6-shield", "disabled",
		"disable-survives-upgrade", "purge-removes-conffile", "purge-removes-state", "purge-removes-symlink",
		"purge-removes-dsh-state"}
	var got []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "CHECK":
			got = append(got, f[1])
			if f[2] != "ok" {
				t.Errorf("%s failed", f[1])
			}
		case len(f) >= 2 && f[0] == "SCORE":
			if len(f) != 3 {
				t.Errorf("%s: no security score", f[1])
				continue
			}
			s, err := strconv.ParseFloat(f[2], 64)
			t.Logf("%s.service installed: exposure %s", f[1], f[2])
			if err != nil || s > 2.0 {
				t.Errorf("%s.service installed: exposure %s, want at most 2.0", f[1], f[2])
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("checks run %q, want %q", got, want)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}
