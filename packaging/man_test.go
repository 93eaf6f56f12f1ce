package packaging

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Every flag each command's --help lists appears, in bold, in its man
// page's markdown (docs/man), from which the page is generated; and so
// does every subcommand's: a subcommand (a flag set named "CMD SUB" in
// cmd/CMD) is in the page's SYNOPSIS, its flags in a section "SUB OPTIONS",
// and its exit statuses in EXIT STATUS.
func TestManPagesCoverFlags(t *testing.T) {
	top := repo(t)
	bin := t.TempDir()
	for _, cmd := range pkgs {
		t.Run(cmd, func(t *testing.T) {
			exe := filepath.Join(bin, cmd)
			run(t, top, nil, "go", "build", "-o", exe, "./cmd/"+cmd)
			b, err := os.ReadFile(filepath.Join(top, "docs/man", cmd+".8.md"))
			if err != nil {
				t.Fatal(err)
			}
			page := string(b)
			subs := subcommands(t, filepath.Join(top, "cmd", cmd), cmd)
			// The command's own flags: anywhere but in a subcommand's section.
			own := page
			for _, sub := range subs {
				own = strings.Replace(own, manSection(page, strings.ToUpper(sub)+" OPTIONS"), "", 1)
			}
			if n := checkFlags(t, exe, nil, cmd+"(8)", own); n < 5 {
				t.Errorf("%s --help: only %d flags found", cmd, n)
			}
			synopsis, exit := manSection(page, "SYNOPSIS"), manSection(page, "EXIT STATUS")
			for _, sub := range subs {
				what := fmt.Sprintf("%s(8) %s", cmd, sub)
				if !strings.Contains(synopsis, "**"+cmd+" "+sub+"**") {
					t.Errorf("%s: not in SYNOPSIS (as **%s %s**)", what, cmd, sub)
				}
				if !strings.Contains(exit, "**"+cmd+" "+sub+"** exits") {
					t.Errorf("%s: EXIT STATUS does not say what **%s %s** exits", what, cmd, sub)
				}
				section := manSection(page, strings.ToUpper(sub)+" OPTIONS")
				if section == "" {
					t.Errorf("%s: no section %s OPTIONS", what, strings.ToUpper(sub))
				}
				if n := checkFlags(t, exe, []string{sub}, what+" OPTIONS", section); n < 1 {
					t.Errorf("%s %s --help: no flags found", cmd, sub)
				}
			}
		})
	}
}

// checkFlags runs `exe args... --help` and reports each flag it lists that
// text does not show in bold. It returns the number of flags listed.
func checkFlags(t *testing.T, exe string, args []string, where, text string) int {
	t.Helper()
	out, _ := exec.Command(exe, append(slices.Clone(args), "--help")...).CombinedOutput() // some print --help on stderr
	flags := helpFlags(string(out))
	for _, flag := range flags {
		if !strings.Contains(text, "**"+flag+"**") {
			t.Errorf("%s does not document %s (%s %s)", where, flag, filepath.Base(exe), strings.Join(append(args, "--help"), " "))
		}
	}
	return len(flags)
}

// subcommands are the names of the flag sets "CMD SUB" in a command's
// source: each subcommand parses its own.
func subcommands(t *testing.T, dir, cmd string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s: %v", dir, err)
	}
	re := regexp.MustCompile(`pflag\.NewFlagSet\("` + regexp.QuoteMeta(cmd) + ` ([a-z][a-z0-9-]*)"`)
	var subs []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			if !slices.Contains(subs, m[1]) {
				subs = append(subs, m[1])
			}
		}
	}
	slices.Sort(subs)
	return subs
}

// manSection is the text of the man page section "# NAME" up to the next
// section ("" if there is none).
func manSection(page, name string) string {
	_, rest, ok := strings.Cut("\n"+page, "\n# "+name+"\n")
	if !ok {
		return ""
	}
	text, _, _ := strings.Cut(rest, "\n# ")
	return text
}

// helpFlags returns the flags of pflag's usage lines ("  -i, --interface …").
var flagLine = regexp.MustCompile(`^\s+(?:(-[a-zA-Z]), )?(--[a-z0-9][a-z0-9-]*)`)

func helpFlags(help string) []string {
	var flags []string
	for line := range strings.Lines(help) {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			if m[1] != "" {
				flags = append(flags, m[1])
			}
			flags = append(flags, m[2])
		}
	}
	return flags
}

// The subcommands the test walks are those the commands have.
func TestSubcommandsFound(t *testing.T) {
	top := repo(t)
	got := map[string][]string{}
	for _, cmd := range pkgs {
		got[cmd] = subcommands(t, filepath.Join(top, "cmd", cmd), cmd)
	}
	for cmd, want := range map[string][]string{"addrregd": {"status"}, "addrreg-refserver": {"history", "query"}} {
		for _, sub := range want {
			if !slices.Contains(got[cmd], sub) {
				t.Errorf("subcommands of %s found: %q, want %s among them", cmd, got[cmd], sub)
			}
		}
	}
}
