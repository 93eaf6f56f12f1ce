package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func versionOf(t *testing.T, dir, rev string) string {
	t.Helper()
	cmd := exec.Command("bash", "packaging/version.sh", rev)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("version.sh %s: %v", rev, err)
	}
	return strings.TrimSpace(string(out))
}

func dpkgLess(a, b string) bool {
	return exec.Command("dpkg", "--compare-versions", a, "lt", b).Run() == nil
}

// Along main's recent history every commit's version sorts above its
// predecessor's (dpkg --compare-versions), so apt never sees a downgrade.
func TestVersionsSortAlongHistory(t *testing.T) {
	need(t, "git", "dpkg")
	top := repo(t)
	if out, _ := exec.Command("git", "-C", top, "rev-parse", "--is-shallow-repository").Output(); strings.TrimSpace(string(out)) != "false" {
		t.Logf("shallow or no git clone: only the synthetic history is checked (TestVersionsSortSynthetic)")
		return
	}
	out, err := exec.Command("git", "-C", top, "log", "--first-parent", "--format=%H", "-n", "30", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	revs := strings.Fields(string(out))
	if len(revs) < 2 {
		t.Fatalf("only %d commits", len(revs))
	}
	newer := versionOf(t, top, revs[0])
	for _, rev := range revs[1:] {
		older := versionOf(t, top, rev)
		if !dpkgLess(older, newer) {
			t.Errorf("%s (%s) does not sort below its successor's %s", older, rev[:7], newer)
		}
		newer = older
	}
	t.Logf("%d commits checked, newest %s", len(revs), versionOf(t, top, revs[0]))
}

// In a history whose commit dates go backwards, across a VERSION bump and
// merges, later commits still sort higher; a shallow clone marks its
// version and sorts it below the real one.
func TestVersionsSortSynthetic(t *testing.T) {
	need(t, "git", "dpkg")
	dir := t.TempDir()
	git := func(env []string, args ...string) string {
		t.Helper()
		return run(t, dir, append([]string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.invalid"}, env...), "git", args...)
	}
	git(nil, "init", "-q", "-b", "main")
	script, err := os.ReadFile(filepath.Join(repo(t), "packaging/version.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "packaging"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("packaging/version.sh", string(script))
	var versions []string
	commit := func(date string) {
		t.Helper()
		git(nil, "add", "-A")
		env := []string{"GIT_COMMITTER_DATE=" + date, "GIT_AUTHOR_DATE=" + date}
		git(env, "commit", "-q", "--allow-empty", "-m", "c")
		versions = append(versions, versionOf(t, dir, "HEAD"))
	}
	commit("2026-11-20T10:00:00Z")
	write("VERSION", "0.1.0\n")
	commit("2026-11-25T10:00:00Z")
	commit("2026-11-19T10:00:00Z") // a clock set back
	// A branch merged into main.
	git(nil, "checkout", "-q", "-b", "topic")
	commit("2026-11-18T10:00:00Z")
	commit("2026-11-18T11:00:00Z")
	git(nil, "checkout", "-q", "main")
	versions = versions[:len(versions)-2]
	commit("2026-11-26T10:00:00Z")
	git([]string{"GIT_COMMITTER_DATE=2026-11-17T10:00:00Z"}, "merge", "-q", "--no-ff", "-m", "merge", "topic")
	versions = append(versions, versionOf(t, dir, "HEAD"))
	write("VERSION", "0.2.0\n")
	commit("2026-11-27T10:00:00Z")
	for i := 1; i < len(versions); i++ {
		if !dpkgLess(versions[i-1], versions[i]) {
			t.Errorf("commit %d: %s does not sort below %s", i, versions[i-1], versions[i])
		}
	}
	t.Logf("versions: %s", strings.Join(versions, " < "))

	shallow := t.TempDir()
	run(t, "", nil, "git", "clone", "-q", "--depth", "1", "file://"+dir, shallow)
	v := versionOf(t, shallow, "HEAD")
	if !strings.HasSuffix(v, "~shallow") || !dpkgLess(v, versions[len(versions)-1]) {
		t.Errorf("shallow clone: %s, want a ~shallow version below %s", v, versions[len(versions)-1])
	}
	// Outside git: VERSION alone.
	plain := t.TempDir()
	if err := os.MkdirAll(filepath.Join(plain, "packaging"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"VERSION", "packaging/version.sh"} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		if err := os.WriteFile(filepath.Join(plain, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("bash", "packaging/version.sh")
	cmd.Dir = plain
	cmd.Env = append(os.Environ(), "GIT_CEILING_DIRECTORIES="+filepath.Dir(plain))
	out, err := cmd.Output()
	if got := strings.TrimSpace(string(out)); err != nil || got != "0.2.0+nogit" {
		t.Errorf("outside git: %q, %v; want 0.2.0+nogit", got, err)
	}
}
