package packaging

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/addrreg/addrreg/test/topo"
)

var rpmArches = map[string]string{"amd64": "x86_64", "arm64": "aarch64"}

// hostArch is this machine's Debian architecture; the test skips where
// make dist builds nothing for it.
func hostArch(t *testing.T) string {
	t.Helper()
	arch := strings.TrimSpace(run(t, "", nil, "dpkg", "--print-architecture"))
	if _, ok := arches[arch]; !ok {
		t.Skipf("no package for %s", arch)
	}
	return arch
}

// unpackTarball unpacks this machine's tarball into a temporary directory
// and returns the directory it made (addrreg-VERSION-ARCH).
func unpackTarball(t *testing.T) string {
	t.Helper()
	dir, version := builtDist(t)
	arch := hostArch(t)
	name := fmt.Sprintf("addrreg-%s-%s", version, arch)
	tmp := t.TempDir()
	run(t, "", nil, "tar", "-xzf", filepath.Join(dir, name+".tar.gz"), "-C", tmp)
	return filepath.Join(tmp, name)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// install.sh into a DESTDIR-style root, with /bin/sh (dash on Debian):
// it installs binaries, units, man pages, docs and /etc/default files; run
// again after the administrator changed /etc/default/addrregd, it keeps the
// change; after an upgrade that changes the shipped files, it keeps the
// changed one (the new one beside it as .new, and says so) and updates the
// unchanged one; uninstall.sh removes everything but the changed file, and
// --purge leaves the root as empty as it was. Run by Debian's sh (dash,
// coreutils) and by BusyBox's (its ash and applets alone on PATH, as on
// Alpine).
func TestInstallScript(t *testing.T) {
	t.Run("dash", func(t *testing.T) { testInstallScript(t, nil, "sh") })
	t.Run("busybox", func(t *testing.T) {
		need(t, "busybox")
		bb, err := exec.LookPath("busybox")
		if err != nil {
			t.Fatal(err)
		}
		applets := t.TempDir()
		run(t, "", nil, bb, "--install", "-s", applets)
		testInstallScript(t, []string{"PATH=" + applets}, bb, "sh")
	})
}

func testInstallScript(t *testing.T, env []string, shell ...string) {
	tree := unpackTarball(t)
	root := t.TempDir()
	sh := func(script string, args ...string) string {
		t.Helper()
		return run(t, "", env, shell[0], append(append(shell[1:], script), args...)...)
	}
	install := func(args ...string) string {
		t.Helper()
		return sh(filepath.Join(tree, "install.sh"), append([]string{"--root", root}, args...)...)
	}
	out := install("--init", "systemd")
	t.Logf("install.sh:\n%s", out)
	for _, p := range pkgs {
		for _, f := range []string{"usr/sbin/" + p, "usr/lib/systemd/system/" + p + ".service", "etc/default/" + p,
			"usr/share/man/man8/" + p + ".8.gz", "usr/share/doc/" + p + "/copyright"} {
			if !exists(filepath.Join(root, f)) {
				t.Errorf("install.sh installed no /%s", f)
			}
		}
		if exists(filepath.Join(root, "etc/init.d", p)) {
			t.Errorf("--init systemd installed the OpenRC script /etc/init.d/%s", p)
		}
		if got, want := readFile(t, filepath.Join(root, "usr/lib/systemd/system", p+".service")),
			readFile(t, filepath.Join(repo(t), "debian", p+".service")); got != want {
			t.Errorf("%s.service differs from debian/%s.service", p, p)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "usr/sbin/addrregd")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("/usr/sbin/addrregd: %v %v, want mode 0755", fi, err)
	}
	if !exists(filepath.Join(root, "usr/lib/addrreg/uninstall.sh")) {
		t.Error("no /usr/lib/addrreg/uninstall.sh")
	}

	// The administrator's change survives a reinstall of the same version.
	conf := filepath.Join(root, "etc/default/addrregd")
	changed := readFile(t, conf) + "ADDRREGD_OPTS=\"--log-level debug\"\n"
	if err := os.WriteFile(conf, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	out = install("--init", "systemd")
	t.Logf("install.sh again:\n%s", out)
	if readFile(t, conf) != changed {
		t.Error("install.sh overwrote the changed /etc/default/addrregd")
	}
	if exists(conf + ".new") {
		t.Error("install.sh wrote .new though the shipped file is the same")
	}

	// An upgrade whose /etc/default files changed: the changed one is kept
	// and the new one put beside it; the unchanged one is replaced.
	for _, p := range []string{"addrregd", "dhcp6-shield"} {
		f := filepath.Join(tree, "files/etc/default", p)
		if err := os.WriteFile(f, []byte(readFile(t, f)+"# new in this version\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out = install("--init", "systemd")
	t.Logf("install.sh upgrade:\n%s", out)
	if readFile(t, conf) != changed {
		t.Error("the upgrade overwrote the changed /etc/default/addrregd")
	}
	if !exists(conf+".new") || readFile(t, conf+".new") != readFile(t, filepath.Join(tree, "files/etc/default/addrregd")) {
		t.Error("the upgrade put no /etc/default/addrregd.new with the new version")
	}
	if !strings.Contains(out, "/etc/default/addrregd: changed here, kept; the new version is /etc/default/addrregd.new") {
		t.Errorf("install.sh did not say it kept /etc/default/addrregd:\n%s", out)
	}
	if !strings.HasSuffix(readFile(t, filepath.Join(root, "etc/default/dhcp6-shield")), "# new in this version\n") {
		t.Error("the upgrade did not update the unchanged /etc/default/dhcp6-shield")
	}

	// uninstall.sh (the installed copy) keeps the changed file only.
	out = sh(filepath.Join(root, "usr/lib/addrreg/uninstall.sh"), "--root", root)
	t.Logf("uninstall.sh:\n%s", out)
	left := treeFiles(t, root)
	if !slices.Equal(left, []string{"etc/default/addrregd"}) {
		t.Errorf("after uninstall.sh: %q, want only the changed etc/default/addrregd", left)
	}
	if readFile(t, conf) != changed {
		t.Error("uninstall.sh changed the changed /etc/default/addrregd")
	}

	// Installed again over the kept file, then purged: nothing is left, not
	// even the directories install.sh made (/etc/default was there).
	install("--init", "systemd")
	if readFile(t, conf) != changed {
		t.Error("a fresh install overwrote the kept /etc/default/addrregd")
	}
	for _, d := range []string{"var/lib/addrregd", "var/lib/private/addrreg-refserver"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	out = sh(filepath.Join(root, "usr/lib/addrreg/uninstall.sh"), "--root", root, "--purge")
	t.Logf("uninstall.sh --purge:\n%s", out)
	if left := treeFiles(t, root); len(left) > 0 {
		t.Errorf("after uninstall.sh --purge: %q left", left)
	}
	for _, d := range []string{"usr", "var/lib/addrreg", "var/lib/addrregd"} {
		if exists(filepath.Join(root, d)) {
			t.Errorf("after uninstall.sh --purge: /%s left", d)
		}
	}
}

// treeFiles lists the files (not directories) under root.
func treeFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	return files
}

// The OpenRC scripts, installed by install.sh --init openrc, run under
// Debian's OpenRC (openrc-run, supervise-daemon) in private mount, PID and
// network namespaces (testdata/openrc.sh): addrregd starts, answers on its
// control socket, is restarted when killed, reloads, and stops. The server's
// and the shield's scripts are only parsed and described (they need
// interfaces to serve). OpenRC does not boot this machine: openrc.sh marks
// its private /run as OpenRC's.
func TestOpenRC(t *testing.T) {
	topo.RequireRoot(t)
	need(t, "openrc-run", "supervise-daemon", "unshare")
	tree := unpackTarball(t)
	root := t.TempDir()
	run(t, "", nil, "sh", filepath.Join(tree, "install.sh"), "--root", root, "--init", "openrc")
	for _, p := range pkgs {
		if !exists(filepath.Join(root, "etc/init.d", p)) {
			t.Errorf("--init openrc installed no /etc/init.d/%s", p)
		}
		if exists(filepath.Join(root, "usr/lib/systemd/system", p+".service")) {
			t.Errorf("--init openrc installed the unit %s.service", p)
		}
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--net", "--pid", "--fork",
		"bash", "testdata/openrc.sh", root)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openrc.sh: %v\n%s", err, out)
	}
	want := []string{"addrregd-start", "addrregd-status", "addrregd-pid", "addrregd-control-socket", "addrregd-options",
		"addrregd-state-dir", "addrregd-respawned", "addrregd-respawned-answers", "addrregd-reload", "addrregd-same-pid-after-reload", "addrregd-stop",
		"addrregd-gone", "addrregd-stopped", "addrregd-log", "addrreg-refserver-describe", "dhcp6-shield-describe"}
	var got []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "CHECK" {
			got = append(got, f[1])
			if f[2] != "ok" {
				t.Errorf("%s failed", f[1])
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

// The RPMs: rpmlint-clean (packaging/rpm/rpmlint.toml's filters each say
// why); each holds its binary (the .deb's bytes), the unit(s) of debian/
// byte for byte, the man page, the docs and licence, and its /etc/default
// file as %config(noreplace); labelled with the binary's architecture.
func TestRPM(t *testing.T) {
	dir, version := builtDist(t)
	need(t, "rpm", "rpmlint")
	var rpms []string
	for _, rpmArch := range rpmArches {
		for _, p := range pkgs {
			rpms = append(rpms, filepath.Join(dir, fmt.Sprintf("%s-%s-1.%s.rpm", p, version, rpmArch)))
		}
	}
	slices.Sort(rpms)
	cmd := exec.Command("rpmlint", append([]string{"-c", filepath.Join(repo(t), "packaging/rpm/rpmlint.toml")}, rpms...)...)
	out, err := cmd.CombinedOutput()
	t.Logf("rpmlint:\n%s", out)
	if err != nil {
		t.Errorf("rpmlint: %v", err)
	}
	if !regexp.MustCompile(`(?m)^ *\d+ packages and 0 specfiles checked; 0 errors, 0 warnings, 0 badness`).Match(out) {
		t.Error("rpmlint found errors or warnings")
	}

	for arch, rpmArch := range rpmArches {
		for _, p := range pkgs {
			rpm := filepath.Join(dir, fmt.Sprintf("%s-%s-1.%s.rpm", p, version, rpmArch))
			if got := run(t, "", nil, "rpm", "-qp", "--qf", "%{NAME} %{VERSION} %{ARCH}", rpm); got != p+" "+version+" "+rpmArch {
				t.Errorf("%s: %q, want %s %s %s", filepath.Base(rpm), got, p, version, rpmArch)
			}
			// rpm --dump: path size mtime sha256 mode owner group isconfig isdoc ...
			digests := map[string][]string{}
			for line := range strings.Lines(run(t, "", nil, "rpm", "-qp", "--dump", rpm)) {
				f := strings.Fields(line)
				if len(f) >= 9 {
					digests[f[0]] = f
				}
			}
			list := run(t, "", nil, "rpm", "-qlp", rpm)
			t.Logf("rpm -qlp %s:\n%s", filepath.Base(rpm), list)
			bin := filepath.Join(extract(t, debPath(dir, p, version, arch)), "usr/sbin", p)
			want := map[string]string{
				"/usr/sbin/" + p: fileSHA256(t, bin),
				"/usr/lib/systemd/system/" + p + ".service": fileSHA256(t, filepath.Join(repo(t), "debian", p+".service")),
				"/etc/default/" + p:                         fileSHA256(t, filepath.Join(repo(t), "debian", p+".default")),
			}
			if socket := filepath.Join(repo(t), "debian", p+".socket"); exists(socket) {
				want["/usr/lib/systemd/system/"+p+".socket"] = fileSHA256(t, socket)
			}
			for path, sum := range want {
				switch f, ok := digests[path]; {
				case !ok:
					t.Errorf("%s: no %s", filepath.Base(rpm), path)
				case f[3] != sum:
					t.Errorf("%s: %s is not the .deb's/debian's (sha256 %s, want %s)", filepath.Base(rpm), path, f[3], sum)
				}
			}
			for _, path := range []string{"/usr/share/man/man8/" + p + ".8.gz", "/usr/share/licenses/" + p + "/copyright",
				"/usr/share/doc/" + p + "/openrc/" + p} {
				if _, ok := digests[path]; !ok {
					t.Errorf("%s: no %s", filepath.Base(rpm), path)
				}
			}
			flags := run(t, "", nil, "rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpm)
			m := regexp.MustCompile(`(?m)^/etc/default/` + regexp.QuoteMeta(p) + ` (\S*)$`).FindStringSubmatch(flags)
			if m == nil || !strings.Contains(m[1], "c") || !strings.Contains(m[1], "n") {
				t.Errorf("%s: /etc/default/%s is not %%config(noreplace):\n%s", filepath.Base(rpm), p, flags)
			}
		}
	}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// dist/SHA256SUMS lists every release artefact of the version, and
// sha256sum -c passes.
func TestSHA256SUMS(t *testing.T) {
	dir, version := builtDist(t)
	sums := readFile(t, filepath.Join(dir, "SHA256SUMS"))
	var listed []string
	for line := range strings.Lines(sums) {
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Fatalf("SHA256SUMS: line %q", line)
		}
		listed = append(listed, f[1])
	}
	var want []string
	for arch, rpmArch := range rpmArches {
		for _, p := range pkgs {
			want = append(want, fmt.Sprintf("%s_%s_%s.deb", p, version, arch), fmt.Sprintf("%s-%s-1.%s.rpm", p, version, rpmArch))
		}
		want = append(want, fmt.Sprintf("addrreg-%s-%s.tar.gz", version, arch))
	}
	slices.Sort(listed)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("SHA256SUMS lists %q, want %q", listed, want)
	}
	t.Logf("sha256sum -c:\n%s", run(t, dir, nil, "sha256sum", "-c", "--strict", "SHA256SUMS"))
}
