package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docs are what each package ships under /usr/share/doc/PKG besides the
// changelog and copyright (debian/PKG.docs, debian/PKG.examples): the
// deployment guide links to examples/, so a package with the guide has
// every example.
func docs(t *testing.T, pkg string) []string {
	t.Helper()
	examples, err := filepath.Glob(filepath.Join(repo(t), "doc/examples/*"))
	if err != nil || len(examples) < 5 {
		t.Fatalf("doc/examples: %d files (%v)", len(examples), err)
	}
	var withExamples []string
	for _, e := range examples {
		withExamples = append(withExamples, "examples/"+filepath.Base(e))
	}
	switch pkg {
	case "addrregd":
		return append([]string{"deployment.md", "status.md"}, withExamples...)
	case "addrreg-refserver":
		return append([]string{"deployment.md"}, withExamples...)
	}
	return nil
}

var docPath = regexp.MustCompile(`/usr/share/doc/([a-z0-9-]+)((?:/[A-Za-z0-9._-]+)*)`)

// The packages ship the guide, the status schema and the examples, plain
// (not compressed: the pages name them so); and every /usr/share/doc path a
// man page or a --help names is in the package it names.
func TestDocsShipped(t *testing.T) {
	dir, version := builtDist(t)
	arch := strings.TrimSpace(run(t, "", nil, "dpkg", "--print-architecture"))
	if _, ok := arches[arch]; !ok {
		t.Skipf("no package for %s", arch)
	}
	roots := map[string]string{}
	for _, p := range pkgs {
		roots[p] = extract(t, debPath(dir, p, version, arch))
		for _, f := range docs(t, p) {
			shipped, err := os.ReadFile(filepath.Join(roots[p], "usr/share/doc", p, f))
			if err != nil {
				t.Errorf("%s: no /usr/share/doc/%s/%s", p, p, f)
				continue
			}
			src := filepath.Join(repo(t), "doc", f)
			if orig, err := os.ReadFile(src); err != nil || string(orig) != string(shipped) {
				t.Errorf("%s: /usr/share/doc/%s/%s is not %s (%v)", p, p, f, src, err)
			}
		}
	}
	for _, p := range pkgs {
		page, err := os.ReadFile(filepath.Join(repo(t), "docs/man", p+".8.md"))
		if err != nil {
			t.Fatal(err)
		}
		texts := map[string]string{p + "(8)": string(page)}
		exe := filepath.Join(roots[p], "usr/sbin", p)
		for _, args := range [][]string{{"--help"}, {"status", "--help"}, {"query", "--help"}, {"history", "--help"}} {
			out, _ := exec.Command(exe, args...).CombinedOutput()
			texts[p+" "+strings.Join(args, " ")] = string(out)
		}
		for where, text := range texts {
			for _, m := range docPath.FindAllStringSubmatch(strings.ReplaceAll(text, `\*`, "*"), -1) {
				root, ok := roots[m[1]]
				if !ok {
					t.Errorf("%s names %s: no package %s", where, m[0], m[1])
					continue
				}
				path := strings.TrimRight(m[0], "./")
				if _, err := os.Stat(filepath.Join(root, path)); err != nil {
					t.Errorf("%s names %s, which package %s does not have", where, path, m[1])
				}
			}
		}
	}
	if out, _ := exec.Command(filepath.Join(roots["addrregd"], "usr/sbin/addrregd"), "status", "--help").CombinedOutput(); !strings.Contains(string(out), "/usr/share/doc/addrregd/status.md") {
		t.Errorf("addrregd status --help does not name /usr/share/doc/addrregd/status.md:\n%s", out)
	}
}

// The version doc/status.md shows is this version's form: VERSION, then
// "+git" and the commit count, date and hash (packaging/version.sh).
func TestStatusDocVersion(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repo(t), "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(repo(t), "doc/status.md"))
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`^` + regexp.QuoteMeta(strings.TrimSpace(string(b))) + `\+git[0-9]+\.[0-9]{8}\.[0-9a-f]{7}$`)
	found := regexp.MustCompile(`addrregd (\S+) \(pid|"version": "([^"]*)"`).FindAllStringSubmatch(string(doc), -1)
	if len(found) < 2 {
		t.Fatalf("doc/status.md: %d versions found, want the table's and the JSON's", len(found))
	}
	for _, m := range found {
		if v := m[1] + m[2]; !want.MatchString(v) {
			t.Errorf("doc/status.md shows version %s, want %s+gitN.YYYYMMDD.HASH (VERSION)", v, strings.TrimSpace(string(b)))
		}
	}
}
