package packaging

import (
	"debug/buildinfo"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// copyrightModule is a module's Files paragraph in debian/copyright.
type copyrightModule struct {
	version string
	bins    []string
	text    string // the paragraph
}

var moduleComment = regexp.MustCompile(`(?m)^Comment: Module (\S+) (\S+), linked into ([^.]+)\.$`)

// copyrightModules parses debian/copyright's module paragraphs.
func copyrightModules(t *testing.T, text string) map[string]copyrightModule {
	t.Helper()
	mods := map[string]copyrightModule{}
	for _, para := range strings.Split(text, "\n\n") {
		files, _, _ := strings.Cut(strings.TrimPrefix(para, "Files: "), "\n")
		if !strings.HasPrefix(para, "Files: ") || files == "*" || files == "GOROOT/src/*" {
			continue
		}
		m := moduleComment.FindStringSubmatch(para)
		if m == nil || m[1]+"/*" != files {
			t.Errorf("debian/copyright: paragraph Files: %s has no Comment: Module %s VERSION, linked into ...", files, strings.TrimSuffix(files, "/*"))
			continue
		}
		if !strings.Contains(para, "\nLicense: ") || !strings.Contains(para, "\nCopyright: ") {
			t.Errorf("debian/copyright: %s has no License or Copyright", m[1])
		}
		mods[m[1]] = copyrightModule{version: m[2], bins: strings.Split(m[3], ", "), text: para}
	}
	return mods
}

// linkedModule is a module the static builds compile in.
type linkedModule struct {
	version, dir string
	bins         []string
}

// linkedModules asks go list which modules' packages each shipped
// command's static build (as make static builds it) compiles, for every
// architecture: what go version -m lists in the binaries. Offline: the
// module cache has them if the commands build.
func linkedModules(t *testing.T) map[string]linkedModule {
	t.Helper()
	mods := map[string]linkedModule{}
	for arch := range arches {
		for _, cmd := range pkgs {
			c := exec.Command("go", "list", "-deps", "-f", `{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}`, "./cmd/"+cmd)
			c.Dir = repo(t)
			c.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOPROXY=off", "GOFLAGS=-mod=readonly")
			out, err := c.Output()
			if err != nil {
				t.Fatalf("go list ./cmd/%s (%s): %v", cmd, arch, err)
			}
			for line := range strings.Lines(string(out)) {
				f := strings.Fields(line)
				if len(f) != 3 {
					continue
				}
				m := mods[f[0]]
				m.version, m.dir = f[1], f[2]
				if !slices.Contains(m.bins, cmd) {
					m.bins = append(m.bins, cmd)
					slices.Sort(m.bins)
				}
				mods[f[0]] = m
			}
		}
	}
	if len(mods) < 5 {
		t.Fatalf("go list found only %d modules", len(mods))
	}
	return mods
}

func readCopyright(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo(t), "debian", "copyright"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// debian/copyright has a paragraph for every module linked into a shipped
// binary, at the version linked, naming the binaries that link it and
// carrying its NOTICE file; and none for a module that is not linked.
func TestCopyrightListsLinkedModules(t *testing.T) {
	listed := copyrightModules(t, readCopyright(t))
	linked := linkedModules(t)
	for path, l := range linked {
		c, ok := listed[path]
		switch {
		case !ok:
			t.Errorf("%s %s is linked into %s but not in debian/copyright (make copyright)", path, l.version, strings.Join(l.bins, ", "))
			continue
		case c.version != l.version:
			t.Errorf("%s: debian/copyright has %s, %s is linked (make copyright)", path, c.version, l.version)
		case !slices.Equal(c.bins, l.bins):
			t.Errorf("%s: debian/copyright says linked into %q, it is into %q (make copyright)", path, c.bins, l.bins)
		}
		notices, _ := filepath.Glob(filepath.Join(l.dir, "NOTICE*"))
		for _, n := range notices {
			b, err := os.ReadFile(n)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(flatten(c.text), flatten(string(b))) {
				t.Errorf("%s: debian/copyright does not carry its %s (Apache-2.0 section 4(d))", path, filepath.Base(n))
			}
		}
	}
	for path, c := range listed {
		if _, ok := linked[path]; !ok {
			t.Errorf("%s %s is in debian/copyright but linked into no shipped binary (make copyright)", path, c.version)
		}
	}
}

// flatten is text without the copyright file's continuation markup and
// with runs of white space as one space.
func flatten(s string) string {
	var words []string
	for _, w := range strings.Fields(s) {
		if w != "." {
			words = append(words, w)
		}
	}
	return strings.Join(words, " ")
}

// debian/copyright is what packaging/copyright writes today: the licence
// texts and copyright lines of the linked versions.
func TestCopyrightUpToDate(t *testing.T) {
	c := exec.Command("go", "run", "./packaging/copyright", "-list", "-cmds", strings.Join(pkgs, ","),
		"-arches", strings.Join(slices.Sorted(maps.Keys(arches)), ","), "-o", "-")
	c.Dir = repo(t)
	c.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly")
	c.Stderr = os.Stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("go run ./packaging/copyright -list: %v", err)
	}
	if want := readCopyright(t); string(out) != want {
		t.Errorf("debian/copyright is not what make copyright writes (%d bytes, generated %d): run make copyright", len(want), len(out))
	}
}

// The shipped binaries link exactly the modules debian/copyright lists, at
// its versions (go version -m on the packages' binaries), and the packages
// carry it.
func TestCopyrightMatchesShippedBinaries(t *testing.T) {
	dir, version := builtDist(t)
	want := readCopyright(t)
	listed := copyrightModules(t, want)
	linked := map[string]map[string]bool{} // module → binaries
	for _, p := range pkgs {
		for arch := range arches {
			root := extract(t, debPath(dir, p, version, arch))
			if b, err := os.ReadFile(filepath.Join(root, "usr/share/doc", p, "copyright")); err != nil || string(b) != want {
				t.Errorf("%s_%s: usr/share/doc/%s/copyright is not debian/copyright (%v)", p, arch, p, err)
			}
			bi, err := buildinfo.ReadFile(filepath.Join(root, "usr/sbin", p))
			if err != nil {
				t.Fatalf("%s (%s): %v", p, arch, err)
			}
			for _, d := range bi.Deps {
				if d.Replace != nil {
					d = d.Replace
				}
				c, ok := listed[d.Path]
				switch {
				case !ok:
					t.Errorf("%s (%s) links %s %s, which debian/copyright does not list", p, arch, d.Path, d.Version)
				case c.version != d.Version:
					t.Errorf("%s (%s) links %s %s, debian/copyright says %s", p, arch, d.Path, d.Version, c.version)
				case !slices.Contains(c.bins, p):
					t.Errorf("%s (%s) links %s, debian/copyright says only %q do", p, arch, d.Path, c.bins)
				}
				if linked[d.Path] == nil {
					linked[d.Path] = map[string]bool{}
				}
				linked[d.Path][p] = true
			}
		}
	}
	for path, c := range listed {
		for _, b := range c.bins {
			if !linked[path][b] {
				t.Errorf("debian/copyright says %s is linked into %s; go version -m does not list it", path, b)
			}
		}
	}
}
