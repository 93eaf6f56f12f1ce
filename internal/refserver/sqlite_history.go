package refserver

import (
	"fmt"
	"math"
	"strconv"
)

// The SQLite history (migration 0003): its rows in histParts partition
// tables history_p0.., behind the view history. The writer inserts into
// the current one; once that holds a (histParts-1)-th of the records kept
// (or spans that part of the age limit), the next one, the oldest, is
// emptied in one statement (SQLite frees its pages whole, without
// touching each row's index entries) and becomes current. The view shows
// only what retention keeps (history_state's floors), so readers see
// exactly the newest records, as the per-row prune kept them.
//
// 21 partitions: at the default limit each holds 5,000 records, and
// emptying one took ~1 ms of the commit that does it (25,000: ~5 ms;
// BenchmarkSQLiteHistoryRotation); the view's 21 arms cost a reader a
// few index seeks more.
const histParts = 21

// histState is history_state's row: the floors the view filters on, the
// next record's seq, the current partition, its rows and oldest time.
type histState struct {
	floorSeq, floorTime, next int64
	cur                       int
	curRows, curMin           int64
}

const (
	histStateCols       = `floor_seq, floor_time, next_seq, cur, cur_rows, cur_min_ns`
	sqliteLoadHistState = `SELECT ` + histStateCols + ` FROM history_state`
)

// histDB is what the history's upkeep needs of a writer in a transaction.
type histDB interface {
	// ints runs the query q, which returns one row of len(dst)
	// integers (never NULL).
	ints(q string, dst ...*int64) error
	// execSQL runs q (no parameters).
	execSQL(q string) error
	// saveState writes s to history_state.
	saveState(s *histState) error
}

func loadHistState(db histDB) (histState, error) {
	var s histState
	var cur int64
	err := db.ints(sqliteLoadHistState, &s.floorSeq, &s.floorTime, &s.next, &cur, &s.curRows, &s.curMin)
	if err != nil {
		return s, fmt.Errorf("read history state: %w", err)
	}
	if cur < 0 || cur >= histParts {
		return s, fmt.Errorf("read history state: partition %d", cur)
	}
	s.cur = int(cur)
	return s, nil
}

// added accounts for hist, written into the current partition.
func (s *histState) added(hist []historyRow) {
	for i := range hist {
		s.curMin = min(s.curMin, hist[i].time)
	}
	s.curRows += int64(len(hist))
	s.next += int64(len(hist))
}

// retain raises the floors to what ret keeps at now and, when the
// current partition is full, empties the next one if it holds nothing
// visible and makes it current.
func (s *histState) retain(db histDB, ret retention, now int64) error {
	limit := ret.max
	if limit == 0 {
		limit = HistoryCap
	}
	full := false
	if limit < math.MaxInt64 {
		s.floorSeq = max(s.floorSeq, s.next-int64(limit))
		part := (int64(limit) + histParts - 2) / (histParts - 1)
		full = s.curRows >= part
	}
	if ret.maxAge > 0 {
		s.floorTime = max(s.floorTime, now-int64(ret.maxAge))
		full = full || (s.curRows > 0 && s.curMin < now-int64(ret.maxAge)/(histParts-1))
	}
	if !full {
		return nil
	}
	n := (s.cur + 1) % histParts
	var maxSeq, maxTime int64
	p := histPart(n)
	err := db.ints(`SELECT COALESCE((SELECT MAX(seq) FROM `+p+`), -1), COALESCE((SELECT MAX(time_ns) FROM `+p+`), -9223372036854775808)`, &maxSeq, &maxTime)
	if err != nil {
		return fmt.Errorf("prune history: %w", err)
	}
	if maxSeq >= s.floorSeq && maxTime >= s.floorTime {
		// Still visible (the limits were raised since it was
		// written): the current partition grows until it is not.
		return nil
	}
	if err := db.execSQL(`DELETE FROM ` + p); err != nil {
		return fmt.Errorf("prune history: %w", err)
	}
	s.cur, s.curRows, s.curMin = n, 0, math.MaxInt64
	return nil
}

func histPart(n int) string { return "history_p" + strconv.Itoa(n) }

// sqliteHistoryInto inserts n rows, seq first, into partition part.
func sqliteHistoryInto(part, n int) string {
	return `INSERT INTO ` + histPart(part) + ` (seq, ` + historyCols + `) VALUES ` + placeholders(n, 13)
}

const sqliteSaveHistState = `UPDATE history_state SET floor_seq = $1, floor_time = $2, next_seq = $3, cur = $4, cur_rows = $5, cur_min_ns = $6`
