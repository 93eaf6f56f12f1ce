package refserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"go.etcd.io/bbolt"
)

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

// prune deletes the oldest history records beyond the retention, after
// record seq was written at now. At most a few records go per call in the
// steady state; a lowered limit is caught up over the following commits
// in steps of pruneStep, so one commit never stalls on a huge delete.
func (r retention) prune(hb *bbolt.Bucket, seq uint64, now time.Time) error {
	const pruneStep = 1024
	maxN := r.max
	if maxN == 0 {
		maxN = HistoryCap
	}
	c := hb.Cursor()
	for i := 0; i < pruneStep; i++ {
		k, v := c.First()
		if k == nil {
			return nil
		}
		old := seq >= maxN && binary.BigEndian.Uint64(k) <= seq-maxN
		if !old && r.maxAge > 0 {
			if h, err := readHistory(v); err != nil || now.Sub(h.Time) > r.maxAge {
				old = true // an unreadable record is pruned too: it answers nothing
			}
		}
		if !old {
			return nil
		}
		if err := c.Delete(); err != nil {
			return fmt.Errorf("prune history: %w", err)
		}
	}
	return nil
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

// needles are byte strings every stored record q selects contains, so
// most records are skipped without being decoded; match decides. For JSON
// records (older databases): the address as text, a DUID in base64; for
// binary ones (codec.go): the address's length byte and 16 bytes, the
// DUID's bytes.
func (q *HistoryQuery) needles() (jsonNeedles, binNeedles [][]byte) {
	if q.Address.IsValid() {
		a16 := q.Address.As16()
		jsonNeedles = append(jsonNeedles, []byte(`"addr":"`+q.Address.String()+`"`))
		binNeedles = append(binNeedles, append([]byte{16}, a16[:]...))
	}
	if len(q.ClientID) > 0 {
		jsonNeedles = append(jsonNeedles, []byte(`"`+base64.StdEncoding.EncodeToString(q.ClientID)+`"`))
		binNeedles = append(binNeedles, q.ClientID)
	}
	return jsonNeedles, binNeedles
}

// query returns the records q selects, oldest first, in one read
// transaction: bbolt readers run beside the writer and never block it.
func (s *store) query(q HistoryQuery) ([]HistoryRecord, error) {
	rs := []HistoryRecord{}
	err := s.db.View(func(tx *bbolt.Tx) error {
		hb := tx.Bucket(bucketHistory)
		if hb == nil {
			return nil
		}
		jsonNeedles, binNeedles := q.needles()
		return hb.ForEach(func(k, v []byte) error {
			needles := binNeedles
			if len(v) > 0 && v[0] == '{' {
				needles = jsonNeedles
			}
			for _, n := range needles {
				if !bytes.Contains(v, n) {
					return nil // cannot match: skip the decoding
				}
			}
			r, err := readHistory(v)
			if err != nil {
				return fmt.Errorf("history record %x: %w", k, err)
			}
			if q.match(&r) {
				rs = append(rs, r)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	return rs, nil
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
// the running server's database. It is safe to call while Run runs and
// never blocks it.
func (s *Server) QueryHistory(q HistoryQuery) ([]HistoryRecord, error) {
	st := s.running.Load()
	if st == nil {
		return nil, errors.New("refserver: not running")
	}
	return st.query(q)
}

// ReadHistoryQuery opens the database at path read-only and returns the
// records q selects. A running server holds the file's lock: this waits up
// to two seconds and fails; ask the server's control socket instead.
func ReadHistoryQuery(path string, q HistoryQuery) ([]HistoryRecord, error) {
	db, err := bbolt.Open(path, 0o640, &bbolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open database %s read-only (is the server running? ask its control socket): %w", path, err)
	}
	defer db.Close()
	return (&store{db: db}).query(q)
}

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
