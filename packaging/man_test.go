package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every flag each command's --help lists appears, in bold, in its man
// page's markdown (docs/man), from which the page is generated.
func TestManPagesCoverFlags(t *testing.T) {
	top := repo(t)
	bin := t.TempDir()
	for _, c := range []struct {
		cmd  string
		help [][]string
	}{
		{"addrregd", [][]string{{"--help"}}},
		{"addrreg-refserver", [][]string{{"--help"}, {"query", "--help"}}},
		{"dhcp6-shield", [][]string{{"--help"}}},
	} {
		exe := filepath.Join(bin, c.cmd)
		run(t, top, nil, "go", "build", "-o", exe, "./cmd/"+c.cmd)
		page, err := os.ReadFile(filepath.Join(top, "docs/man", c.cmd+".8.md"))
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for _, args := range c.help {
			out, _ := exec.Command(exe, args...).CombinedOutput() // some print --help on stderr
			for _, flag := range helpFlags(string(out)) {
				n++
				if !strings.Contains(string(page), "**"+flag+"**") {
					t.Errorf("%s(8) does not document %s (%s %s)", c.cmd, flag, c.cmd, strings.Join(args, " "))
				}
			}
		}
		if n < 5 {
			t.Errorf("%s --help: only %d flags found", c.cmd, n)
		}
	}
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
