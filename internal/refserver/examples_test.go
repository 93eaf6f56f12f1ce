package refserver

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestExampleQueries runs the operators' queries of doc/examples/*.sql
// (README, addrreg-refserver(8)) against both databases and checks their
// answers.
func TestExampleQueries(t *testing.T) {
	forBackends(t, func(t *testing.T, db string) {
		st := openTest(t, db, retention{})
		d1, d2, d3 := []byte{0, 1, 0, 1, 1}, []byte{0, 1, 0, 1, 2}, []byte{0, 1, 0, 1, 3}
		a, r := "2001:db8:1::4f2a", "2001:db8:2::99"
		at := func(h float64) time.Time { return st0.Add(time.Duration(h * float64(time.Hour))) }
		relayed := regEvent(d3, r, at(3), 2*time.Hour)
		relayed.Binding.Iface, relayed.Binding.LinkAddr = "eth1", netip.MustParseAddr("2001:db8:2::1")
		relayed.Binding.LinkLayer = []byte{2, 0, 0, 0, 0, 3}
		mustCommit(t, st, regEvent(d1, a, at(0), 2*time.Hour))
		mustCommit(t, st, regEvent(d1, a, at(1), 2*time.Hour))
		mustCommit(t, st, regEvent(d2, a, at(2), 2*time.Hour))
		mustCommit(t, st, relayed)
		mustCommit(t, st, regEvent(d2, a, at(4), 0))
		raw := st.(interface{ rawDB() *sql.DB }).rawDB()
		unix := func(h float64) int64 { return at(h).Unix() }
		for _, tc := range []struct {
			file string
			args []any
			want [][]string
		}{
			{"holder-at.sql", []any{a, unix(0.5)}, [][]string{{"0001000101", a, "eth0", "", "", "", "register", fmt.Sprint(unix(0)), "7200"}}},
			{"holder-at.sql", []any{a, unix(2.5)}, [][]string{{"0001000102", a, "eth0", "", "", "", "move", fmt.Sprint(unix(2)), "7200"}}},
			{"holder-at.sql", []any{a, unix(5)}, nil},
			{"holder-at.sql", []any{a, unix(-1)}, nil},
			{"duid-addresses.sql", []any{"0001000101", unix(-24), unix(24)}, [][]string{{a, fmt.Sprint(unix(0)), fmt.Sprint(unix(1)), "2"}}},
			{"duid-addresses.sql", []any{"0001000103", unix(-24), unix(24)}, [][]string{{r, fmt.Sprint(unix(3)), fmt.Sprint(unix(3)), "1"}}},
			{"duid-addresses.sql", []any{"0001000101", unix(4), unix(24)}, nil},
			{"link-today.sql", []any{"2001:db8:2::1", unix(0)}, [][]string{{fmt.Sprint(unix(3)), "register", r, "0001000103", "", "eth1", "2001:db8:2::1", "02:00:00:00:00:03", ""}}},
			{"link-today.sql", []any{"eth0", unix(0)}, [][]string{
				{fmt.Sprint(unix(0)), "register", a, "0001000101", "", "eth0", "", "", ""},
				{fmt.Sprint(unix(2)), "move", a, "0001000102", "0001000101", "eth0", "", "", ""},
			}},
		} {
			q, err := os.ReadFile("../../doc/examples/" + tc.file)
			if err != nil {
				t.Fatal(err)
			}
			got := runQuery(t, raw, string(q), tc.args...)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s %v (-want +got):\n%s", tc.file, tc.args, diff)
			}
			t.Logf("%s %v:\n%s", tc.file, tc.args, formatRows(got))
		}
	})
}

func runQuery(t *testing.T, db *sql.DB, q string, args ...any) [][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, q)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out [][]string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(cols))
		for i, v := range vals {
			switch v := v.(type) {
			case []byte:
				row[i] = string(v)
			case nil:
			default:
				row[i] = fmt.Sprint(v)
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func formatRows(rows [][]string) string {
	var b strings.Builder
	for _, r := range rows {
		b.WriteString(strings.Join(r, " | ") + "\n")
	}
	if len(rows) == 0 {
		b.WriteString("(no rows)\n")
	}
	return b.String()
}
