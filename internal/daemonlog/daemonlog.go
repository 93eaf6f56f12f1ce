// Package daemonlog builds the slog loggers of addrreg's daemons so that
// their lines fit wherever stderr goes: a terminal or a file gets ordinary
// text or JSON lines with timestamps; the systemd journal gets each line
// prefixed with its syslog priority (sd-daemon(3): "<3>" error … "<7>"
// debug), so `journalctl -p err` finds errors, and no timestamp of our own
// (the journal stamps every line).
//
// Whether stderr is the journal is decided as sd_journal_stream_fd(3)
// documents it, by go-systemd's journal.StderrIsJournalStream: systemd sets
// JOURNAL_STREAM to the device and inode of the stream it connected, and
// only if stderr's fstat matches is it the journal. An inherited
// JOURNAL_STREAM (a daemon started from a shell in a unit, stderr
// redirected to a file) does not count.
//
// Error attributes are named "err" in every package; "reason" is a drop
// or reject reason (a counter's label), never a Go error.
package daemonlog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"

	"github.com/coreos/go-systemd/v22/journal"
)

// Options says how to log.
type Options struct {
	Format string // "text" (default) or "json"
	Level  slog.Level
	// Journal: prefix priorities and drop timestamps. New sets it when
	// the writer is os.Stderr and stderr is the journal's stream.
	Journal bool
}

// ParseLevel parses a --log-level value.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("want debug, info, warn or error, not %q", s)
	}
	return l, nil
}

// New returns a logger writing to w. When w is os.Stderr and stderr is the
// journal's stream (journal.StderrIsJournalStream), o.Journal is turned on;
// a malformed JOURNAL_STREAM counts as not the journal.
func New(w io.Writer, o Options) (*slog.Logger, error) {
	if w == io.Writer(os.Stderr) {
		if is, err := journal.StderrIsJournalStream(); err == nil && is {
			o.Journal = true
		}
	}
	hopts := &slog.HandlerOptions{Level: o.Level}
	if o.Journal {
		hopts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	if !o.Journal {
		switch o.Format {
		case "", "text":
			return slog.New(slog.NewTextHandler(w, hopts)), nil
		case "json":
			return slog.New(slog.NewJSONHandler(w, hopts)), nil
		}
		return nil, fmt.Errorf("log format must be text or json, not %q", o.Format)
	}
	jh := &journalHandler{mu: &sync.Mutex{}, out: w, buf: &bytes.Buffer{}}
	switch o.Format {
	case "", "text":
		jh.inner = slog.NewTextHandler(jh.buf, hopts)
	case "json":
		jh.inner = slog.NewJSONHandler(jh.buf, hopts)
	default:
		return nil, fmt.Errorf("log format must be text or json, not %q", o.Format)
	}
	return slog.New(jh), nil
}

// Priority is the syslog priority of a slog level (RFC 5424 §6.2.1):
// error 3, warning 4, info 6, debug 7.
func Priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}

// journalHandler formats each record with inner into buf and writes it to
// out behind its "<N>" priority prefix, one write per line. Handlers made by
// WithAttrs/WithGroup share mu and buf (the inner handlers all write to buf).
type journalHandler struct {
	mu    *sync.Mutex
	out   io.Writer
	buf   *bytes.Buffer
	inner slog.Handler
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Reset()
	h.buf.WriteString("<" + strconv.Itoa(Priority(r.Level)) + ">")
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	_, err := h.out.Write(h.buf.Bytes())
	return err
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{mu: h.mu, out: h.out, buf: h.buf, inner: h.inner.WithAttrs(as)}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{mu: h.mu, out: h.out, buf: h.buf, inner: h.inner.WithGroup(name)}
}
