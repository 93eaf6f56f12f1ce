package refserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// HistoryCap is how many history records the database keeps unless
// Config.HistoryMax says otherwise; older ones are pruned as new ones are
// written.
const HistoryCap = 100000

// History retention defaults: the newest DefaultHistoryMax records are
// kept, whatever their age (HistoryMaxAge 0).
const DefaultHistoryMax = HistoryCap

// DefaultControlSocket is where the command answers history queries.
const DefaultControlSocket = "/run/addrreg-refserver/control.sock"

// retention bounds the history bucket: at most max records (0: HistoryCap),
// none older than maxAge (0: no age limit).
type retention struct {
	max    uint64
	maxAge time.Duration
}

// HistoryQuery selects history records. The zero value selects all.
type HistoryQuery struct {
	Address  netip.Addr `json:"address,omitzero"`
	ClientID HexBytes   `json:"client_id,omitempty"`
	Since    time.Time  `json:"since,omitzero"`
	Until    time.Time  `json:"until,omitzero"`
}

// HexBytes marshals as lower-case hex.
type HexBytes []byte

// MarshalText implements encoding.TextMarshaler.
func (h HexBytes) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *HexBytes) UnmarshalText(b []byte) error {
	d, err := hex.DecodeString(string(b))
	*h = d
	return err
}

// match reports whether r is selected by q. A record matches a client ID
// when that client held the address (DUID) or lost it (PrevDUID, a move).
func (q *HistoryQuery) match(r *HistoryRecord) bool {
	if q.Address.IsValid() && r.Addr != q.Address {
		return false
	}
	if len(q.ClientID) > 0 && !bytes.Equal(r.DUID, q.ClientID) && !bytes.Equal(r.PrevDUID, q.ClientID) {
		return false
	}
	if !q.Since.IsZero() && r.Time.Before(q.Since) {
		return false
	}
	if !q.Until.IsZero() && r.Time.After(q.Until) {
		return false
	}
	return true
}

// Holding is who held an address over a span of time.
type Holding struct {
	HistoryRecord           // the last register/refresh/move of the holder before the time asked
	Since         time.Time `json:"since"`          // when that client's hold began (register or move)
	Until         time.Time `json:"until,omitzero"` // when it ended (deregister, expire, move away); zero: still held
	UntilEvent    string    `json:"until_event,omitempty"`
}

// HolderAt answers "who held addr at t" from addr's history records,
// oldest first (as QueryHistory returns them). ok is false when nobody did.
func HolderAt(records []HistoryRecord, addr netip.Addr, t time.Time) (h Holding, ok bool) {
	for _, r := range records {
		if r.Addr != addr || r.Event == "reject" {
			continue
		}
		if r.Time.After(t) {
			if ok && h.Until.IsZero() {
				switch r.Event {
				case "deregister", "expire", "move":
					h.Until, h.UntilEvent = r.Time, r.Event
				}
			}
			continue
		}
		switch r.Event {
		case "register", "move":
			h, ok = Holding{HistoryRecord: r, Since: r.Time}, true
		case "refresh":
			if ok && bytes.Equal(h.DUID, r.DUID) {
				h.HistoryRecord = r
			} else {
				h, ok = Holding{HistoryRecord: r, Since: r.Time}, true
			}
		case "deregister", "expire":
			h, ok = Holding{}, false
		}
	}
	if ok && h.Valid > 0 && h.Valid < time.Duration(0xffffffff)*time.Second && h.Time.Add(h.Valid).Before(t) {
		return Holding{}, false // its lifetime ran out before t
	}
	return h, ok
}

// QueryHistory returns the history records q selects, oldest first, from
// the running server's database (every server's records when servers share
// one). It is safe to call while Run runs.
func (s *Server) QueryHistory(q HistoryQuery) ([]HistoryRecord, error) {
	st := s.store()
	if st == nil {
		return nil, errors.New("refserver: not running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return st.history(ctx, q)
}

// ReadHistoryQuery reads the database db (an SQLite file, a PostgreSQL URL,
// or an old-format file not yet imported) and returns the records q
// selects. A running server need not stop: SQLite's WAL lets a reader in
// beside it. passwordFile is for PostgreSQL, as Config.DBPasswordFile.
func ReadHistoryQuery(db string, q HistoryQuery) ([]HistoryRecord, error) {
	return ReadHistoryDB(context.Background(), db, "", q)
}

// ReadHistoryDB is ReadHistoryQuery with a context and a password file.
func ReadHistoryDB(ctx context.Context, db, passwordFile string, q HistoryQuery) ([]HistoryRecord, error) {
	if !isPostgres(db) && isLegacy(db) {
		old, err := readLegacy(db)
		if err != nil {
			return nil, err
		}
		rs := []HistoryRecord{}
		for _, r := range old.history {
			if q.match(&r) {
				rs = append(rs, r)
			}
		}
		return rs, nil
	}
	st, err := openStorage(ctx, db, storeOptions{readOnly: true, passwordFile: passwordFile, log: discardLogger{}})
	if err != nil {
		return nil, err
	}
	defer st.close()
	return st.history(ctx, q)
}

type discardLogger struct{}

func (discardLogger) Info(string, ...any) {}
func (discardLogger) Warn(string, ...any) {}

// controlRequest is one line a client writes on the control socket.
type controlRequest struct {
	Op      string       `json:"op"` // "history"
	History HistoryQuery `json:"history"`
}

// controlReply is the server's one answer.
type controlReply struct {
	Records []HistoryRecord `json:"records,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// ServeControl answers history queries on ln until ctx ends, one
// connection at a time (a query is one read transaction).
func (s *Server) ServeControl(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("control socket %s: accept: %w", ln.Addr(), err)
		}
		s.answerControl(c)
	}
}

func (s *Server) answerControl(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var req controlRequest
	var rep controlReply
	line, err := bufio.NewReader(io.LimitReader(c, 64<<10)).ReadBytes('\n')
	switch {
	case err != nil && len(line) == 0:
		return
	case json.Unmarshal(line, &req) != nil:
		rep.Error = "request is not JSON"
	case req.Op != "history":
		rep.Error = fmt.Sprintf("unknown op %q", req.Op)
	default:
		rep.Records, err = s.QueryHistory(req.History)
		if err != nil {
			rep.Error = err.Error()
		}
	}
	if err := json.NewEncoder(c).Encode(&rep); err != nil {
		s.log.Debug("control socket: write", "err", err)
	}
}

// QueryControl asks the server on the control socket at path for history.
func QueryControl(ctx context.Context, path string, q HistoryQuery) ([]HistoryRecord, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	b, err := json.Marshal(controlRequest{Op: "history", History: q})
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("control socket %s: write: %w", path, err)
	}
	var rep controlReply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		return nil, fmt.Errorf("control socket %s: read answer: %w", path, err)
	}
	if rep.Error != "" {
		return nil, fmt.Errorf("server: %s", rep.Error)
	}
	if rep.Records == nil {
		rep.Records = []HistoryRecord{}
	}
	return rep.Records, nil
}

// ReadHistory reads every history record of the database db.
func ReadHistory(db string) ([]HistoryRecord, error) { return ReadHistoryQuery(db, HistoryQuery{}) }
