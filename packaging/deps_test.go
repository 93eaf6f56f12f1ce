package packaging

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// notCommands are words of the tree that name a program installed on some
// machines but are not run by the build or the tests.
var notCommands = map[string]string{
	"route":       "a netlink route event in netmon, not net-tools' route",
	"time":        "a word (Go's time package, log attributes), not /usr/bin/time",
	"view":        "a word in the demo's text, not vim's view",
	"policy-rc.d": "the file make deps writes (and removes) itself",
	"sqlite3":     "the database/sql driver's name (ncruces/go-sqlite3, pure Go), not the sqlite3 shell",
}

// baseline is what a CI machine has before `make deps`: a minimal Debian
// (Essential and Priority: required packages, checked below), git and
// make to clone and start the build, and the certificate store.
var baseline = []string{"git", "make", "ca-certificates", "apt"}

// TestDepsProvideCommands checks that every program the build and the tests
// can run (a word of a shell script, the Makefile, debian/rules or a Go
// string literal that is a program on this machine's PATH) comes from a
// Debian package `make deps` installs (or one those depend on), from the
// minimal system, or from Go. A program installed here by hand, which the
// next fresh machine will not have, fails it. What this cannot see — a
// program not installed here at all, one a Debian tool runs internally —
// `make ci-clean` finds: it runs CI in a freshly debootstrapped system.
func TestDepsProvideCommands(t *testing.T) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skip("not a Debian system: no dpkg-query")
	}
	top := repo(t)
	out, err := exec.Command("make", "-s", "-C", top, "deb-pkgs").Output()
	if err != nil {
		t.Fatalf("make deb-pkgs: %v", err)
	}
	named := strings.Fields(string(out))
	installed := dpkgInstalled(t)
	for _, p := range named {
		if _, ok := installed[p]; !ok {
			t.Logf("%s (named by make deps) is not installed here: run make deps; its programs are not checked", p)
		}
	}

	allowed := map[string]string{}
	for p, info := range installed {
		if info.essential || info.priority == "required" {
			allowed[p] = "minimal system"
		}
	}
	for _, p := range baseline {
		allowed[p] = "baseline"
	}
	// What the named packages pull in (Depends and Pre-Depends, as installed).
	args := append([]string{"depends", "--recurse", "--important", "--installed", "--no-recommends", "--no-suggests"}, named...)
	deps, err := exec.Command("apt-cache", args...).Output()
	if err != nil {
		t.Fatalf("apt-cache depends: %v", err)
	}
	for _, line := range strings.Split(string(deps), "\n") {
		if line != "" && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "<") {
			allowed[strings.TrimSuffix(strings.SplitN(line, ":", 2)[0], "")] = "make deps"
		}
	}
	for _, p := range named {
		allowed[p] = "make deps"
	}

	words := commandWords(t, top)
	gr, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	goroot := strings.TrimSpace(string(gr))
	home, _ := os.UserHomeDir()
	checked := 0
	for _, w := range words {
		if _, skip := notCommands[w.word]; skip {
			continue
		}
		path, err := exec.LookPath(w.word)
		if err != nil || !filepath.IsAbs(path) {
			continue // a function, a builtin, or not a program here
		}
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			real = path
		}
		if strings.HasPrefix(real, goroot+"/") || (home != "" && strings.HasPrefix(real, filepath.Join(home, "go", "bin")+"/")) {
			continue // Go, and what `go install` put in GOPATH/bin (make lint)
		}
		pkg := dpkgOwner(real, path)
		checked++
		switch {
		case pkg == "":
			t.Errorf("%s (%s, used in %s) is from no Debian package: installed by hand? Add its package to DEB_PKGS", w.word, real, w.where)
		case allowed[pkg] == "":
			t.Errorf("%s (%s, used in %s) comes from %s, which make deps does not install: add it to DEB_PKGS", w.word, real, w.where, pkg)
		}
	}
	t.Logf("%d programs checked against %d packages named by make deps", checked, len(named))
}

type word struct{ word, where string }

// commandWords lists the words of the tree that could name a program: every
// word of the shell scripts and Makefiles, every string literal of the Go
// files that looks like a program name.
func commandWords(t *testing.T, top string) []word {
	t.Helper()
	seen := map[string]bool{}
	var ws []word
	add := func(w, where string) {
		if len(w) < 2 || seen[w] {
			return
		}
		seen[w] = true
		ws = append(ws, word{w, where})
	}
	shWord := regexp.MustCompile(`[A-Za-z0-9_][A-Za-z0-9_.+-]*`)
	goLit := regexp.MustCompile(`"([a-z][a-z0-9_.+-]*)"`)
	err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(top, p)
		if d.IsDir() {
			switch rel {
			case ".git", "build", "dist", "bin", "testdata":
				return filepath.SkipDir
			}
			if d.Name() == "testdata" || d.Name() == "rootfs" {
				return filepath.SkipDir
			}
			return nil
		}
		name := d.Name()
		isShell := strings.HasSuffix(name, ".sh") || name == "Makefile" || rel == "debian/rules" || rel == ".ci/run"
		isGo := strings.HasSuffix(name, ".go")
		if !isShell && !isGo {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		n := 0
		for sc.Scan() {
			n++
			line := sc.Bytes()
			where := rel
			if isShell {
				if i := bytes.IndexByte(line, '#'); i >= 0 && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t') {
					line = line[:i]
				}
				for _, m := range shWord.FindAll(line, -1) {
					add(string(m), where)
				}
				continue
			}
			for _, m := range goLit.FindAllSubmatch(line, -1) {
				add(string(m[1]), where)
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatalf("walk %s: %v", top, err)
	}
	slices.SortFunc(ws, func(a, b word) int { return strings.Compare(a.word, b.word) })
	return ws
}

type pkgInfo struct {
	priority  string
	essential bool
}

func dpkgInstalled(t *testing.T) map[string]pkgInfo {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f", `${db:Status-Abbrev}\t${Package}\t${Priority}\t${Essential}\n`).Output()
	if err != nil {
		t.Fatalf("dpkg-query: %v", err)
	}
	m := map[string]pkgInfo{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 || !strings.HasPrefix(f[0], "ii") {
			continue
		}
		m[f[1]] = pkgInfo{priority: f[2], essential: f[3] == "yes"}
	}
	return m
}

// dpkgOwner is the package that installed the file, under any of its names
// (merged /usr: /bin/x is /usr/bin/x, and dpkg knows one of them).
func dpkgOwner(paths ...string) string {
	var cands []string
	for _, p := range paths {
		cands = append(cands, p)
		if rest, ok := strings.CutPrefix(p, "/usr"); ok {
			cands = append(cands, rest)
		} else {
			cands = append(cands, "/usr"+p)
		}
	}
	for _, c := range cands {
		out, err := exec.Command("dpkg-query", "-S", c).Output()
		if err != nil {
			continue
		}
		line, _, _ := strings.Cut(string(out), "\n")
		if pkg, _, ok := strings.Cut(line, ":"); ok && !strings.Contains(pkg, ",") {
			return strings.TrimSpace(pkg)
		}
		if pkgs, _, ok := strings.Cut(line, ": "); ok {
			// "a, b: /path" (diversions, shared directories): the first.
			first, _, _ := strings.Cut(pkgs, ",")
			return strings.TrimSpace(first)
		}
	}
	return ""
}
