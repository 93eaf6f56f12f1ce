package netmon

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// Recordings (testdata/*.nlrec) hold real datagrams read from rtnetlink by
// TestRecord, one per line: "<section> <hex>", where section is dump-links,
// dump-inet6, dump-addrs (the initial dump) or stream.
type recording struct {
	dump   [][]byte
	stream [][]byte
}

func loadRecording(t testing.TB, name string) recording {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name + ".nlrec")
	if err != nil {
		t.Fatal(err)
	}
	var r recording
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<22)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sec, hx, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("%s: bad line %.40q", name, line)
		}
		d, err := hex.DecodeString(hx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if sec == "stream" {
			r.stream = append(r.stream, d)
		} else {
			r.dump = append(r.dump, d)
		}
	}
	return r
}

func messagesOf(t testing.TB, dgs [][]byte) []message {
	t.Helper()
	var out []message
	for _, d := range dgs {
		ms, err := parseDatagram(d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ms...)
	}
	return out
}

// fakeKernel replays messages. Each subscribe hands out the next stream
// script; a script's error (if any) ends it, as ENOBUFS would.
type fakeKernel struct {
	mu      sync.Mutex
	dumps   [][]message // one per dump() call; the last one repeats
	scripts []script
	get     func(int, netip.Addr) ([]message, error)
	// subErr, if set, is the error of the n-th subscribe (from 0); nil:
	// that one succeeds.
	subErr func(n int) error
	subs   int
	ndumps int
}

type script struct {
	batches [][]message
	err     error // returned after the batches; nil: block until closed
}

func (k *fakeKernel) subscribe(int) (stream, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.subErr != nil {
		if err := k.subErr(k.subs); err != nil {
			k.subs++
			return nil, err
		}
	}
	var sc script
	if k.subs < len(k.scripts) {
		sc = k.scripts[k.subs]
	}
	k.subs++
	return &fakeStream{sc: sc, closed: make(chan struct{})}, nil
}

func (k *fakeKernel) dump() ([]message, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	i := min(k.ndumps, len(k.dumps)-1)
	k.ndumps++
	if i < 0 {
		return nil, nil
	}
	return k.dumps[i], nil
}

func (k *fakeKernel) closeIdle()   {}
func (k *fakeKernel) close() error { return nil }

func (k *fakeKernel) getAddr(i int, ip netip.Addr) ([]message, error) {
	if k.get == nil {
		return nil, errors.New("no getAddr")
	}
	return k.get(i, ip)
}

type fakeStream struct {
	sc     script
	i      int
	once   sync.Once
	closed chan struct{}
}

func (s *fakeStream) recv(deadline time.Time) ([]message, error) {
	if s.i < len(s.sc.batches) {
		s.i++
		return s.sc.batches[s.i-1], nil
	}
	if s.sc.err != nil && s.i == len(s.sc.batches) {
		s.i++
		return nil, s.sc.err
	}
	tm := time.NewTimer(time.Until(deadline))
	defer tm.Stop()
	select {
	case <-s.closed:
		return nil, os.ErrClosed
	case <-tm.C:
		return nil, os.ErrDeadlineExceeded
	}
}

func (s *fakeStream) close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}
