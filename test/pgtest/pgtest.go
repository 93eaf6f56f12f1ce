// Package pgtest starts a private PostgreSQL server for tests: its own
// cluster (initdb) in a temporary directory, run by pg_ctl as an
// unprivileged user (nobody when the test runs as root), listening on a
// unix socket in that directory and on a loopback TCP port. It never
// touches the system's PostgreSQL service.
//
// A package's tests share one cluster (Shared), each test in a database
// of its own (NewDB); TestMain calls Main so that the cluster stops when
// the tests end. Restart (pg_ctl restart -m fast) and Stop/Start let a
// test take the database away under a running server.
//
// Require skips a test under -short and, outside CI, when PostgreSQL is not
// installed; under CI=true a missing PostgreSQL fails it (as
// topo.RequireRoot does for root).
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// BinDir is where Debian's postgresql-15 puts initdb, pg_ctl and postgres.
var BinDir = "/usr/lib/postgresql/15/bin"

// Password is the password of the role "addrreg" (which a test uses over
// TCP, where the cluster asks for one).
const Password = "s3cret-pgtest"

// Cluster is a running test server.
type Cluster struct {
	Dir  string // the temporary directory: data in Dir/data, socket in Dir
	Port int    // loopback TCP port (and the socket's number)

	mu      sync.Mutex
	dbs     atomic.Int64
	cred    *syscall.Credential
	started bool
}

// Require skips t under -short and, outside CI, when PostgreSQL is missing.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a PostgreSQL server: not run under -short (make unit)")
	}
	if _, err := os.Stat(filepath.Join(BinDir, "initdb")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is not installed (%v); CI must install it (make deps)", err)
		}
		t.Skipf("PostgreSQL is not installed (%v): make deps", err)
	}
}

var (
	sharedMu sync.Mutex
	shared   *Cluster
)

// Shared returns the package's cluster, starting it on first use.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	Require(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil {
		c, err := Start()
		if err != nil {
			t.Fatal(err)
		}
		shared = c
	}
	return shared
}

// Main runs the tests and then stops the shared cluster; call it from
// TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	sharedMu.Lock()
	if shared != nil {
		shared.Close()
		shared = nil
	}
	sharedMu.Unlock()
	return code
}

// Start makes and starts a new cluster; Close removes it.
func Start() (*Cluster, error) {
	dir, err := os.MkdirTemp("", "pgtest")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root.
		c.cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		if err := os.Chown(dir, 65534, 65534); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("postgres\n"), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if out, err := c.run("initdb", "-D", c.data(), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
		"--pwfile="+pw, "-E", "UTF8", "--no-sync", "--locale=C"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\nfsync = on\nmax_connections = 100\nshared_buffers = 32MB\n", c.Port, dir)
	f, err := os.OpenFile(filepath.Join(c.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(conf)
		f.Close()
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.Start(); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.exec("postgres", "CREATE ROLE addrreg LOGIN PASSWORD '"+Password+"'"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) data() string { return filepath.Join(c.Dir, "data") }

func (c *Cluster) run(tool string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(BinDir, tool), args...)
	cmd.Dir = c.Dir
	cmd.Env = []string{"LANG=C", "PATH=/usr/bin:/bin"}
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd.CombinedOutput()
}

// Start starts the server (again) and waits until it accepts connections.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if out, err := c.run("pg_ctl", "-D", c.data(), "-l", filepath.Join(c.Dir, "log"), "-w", "-t", "60", "start"); err != nil {
		return fmt.Errorf("pg_ctl start: %w: %s", err, out)
	}
	c.started = true
	return nil
}

// Stop stops the server (-m fast: connections are cut, nothing is lost).
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started {
		return nil
	}
	if out, err := c.run("pg_ctl", "-D", c.data(), "-m", "fast", "-w", "-t", "60", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop: %w: %s", err, out)
	}
	c.started = false
	return nil
}

// Restart is pg_ctl restart -m fast.
func (c *Cluster) Restart() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if out, err := c.run("pg_ctl", "-D", c.data(), "-l", filepath.Join(c.Dir, "log"), "-m", "fast", "-w", "-t", "60", "restart"); err != nil {
		return fmt.Errorf("pg_ctl restart: %w: %s", err, out)
	}
	c.started = true
	return nil
}

// Close stops the server and removes its directory.
func (c *Cluster) Close() {
	_ = c.Stop()
	os.RemoveAll(c.Dir)
}

// SocketURL is the URL of database name over the unix socket, as the
// superuser postgres (trusted: no password).
func (c *Cluster) SocketURL(name string) string {
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&port=%d", name, c.Dir, c.Port)
}

// TCPURL is the URL of database name over loopback TCP as the role
// addrreg, without its password (Password; the cluster asks for it).
func (c *Cluster) TCPURL(name string) string {
	return fmt.Sprintf("postgres://addrreg@127.0.0.1:%d/%s?sslmode=disable", c.Port, name)
}

// NewDB creates an empty database owned by addrreg for one test, dropped
// when the test ends, and returns its SocketURL.
func (c *Cluster) NewDB(t testing.TB) string {
	t.Helper()
	name := "t" + strconv.FormatInt(c.dbs.Add(1), 10) + "_" + strings.ToLower(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, t.Name()))
	if len(name) > 60 {
		name = name[:60]
	}
	if err := c.exec("postgres", "CREATE DATABASE "+name+" OWNER addrreg"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.exec("postgres", "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	return c.SocketURL(name)
}

// exec runs one statement in database db as postgres.
func (c *Cluster) exec(db, stmt string) error {
	conn, err := sql.Open("pgx", c.SocketURL(db))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := conn.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("%s: %w", stmt, err)
	}
	return nil
}
