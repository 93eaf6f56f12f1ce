package scheduler

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// justBelowOne is the largest value a [0, 1) source can return: RAND's top.
var justBelowOne = math.Nextafter(1, 0)

// script returns a rand func that replays vals, then fails the test.
func script(t testing.TB, vals ...float64) func() float64 {
	return func() float64 {
		if len(vals) == 0 {
			t.Fatal("rand called more often than scripted")
			return 0
		}
		v := vals[0]
		vals = vals[1:]
		return v
	}
}

func repeat(v float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

type step struct {
	Wait time.Duration
	OK   bool
}

// walk drives b as an agent would: elapsed grows by each wait.
func walk(b *Backoff, calls int) []step {
	var got []step
	var elapsed time.Duration
	for range calls {
		w, ok := b.Next(elapsed)
		got = append(got, step{w, ok})
		elapsed += w
	}
	return got
}

func ms(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }

func TestBackoffScripted(t *testing.T) {
	s := time.Second
	tests := []struct {
		name  string
		r     Retrans
		rand  []float64
		calls int
		want  []step
	}{
		{
			// RAND 0: the bare doubling. The third call ends the exchange:
			// three sends made; 4 s is how long the last may be answered.
			name: "MRC 3, RAND 0", r: DefaultRegistration, rand: repeat(0.5, 3), calls: 5,
			want: []step{{1 * s, true}, {2 * s, true}, {4 * s, false}, {0, false}, {0, false}},
		},
		{
			// RAND at its bottom, -0.1: RT1 = 0.9, RT2 = 2*0.9 - 0.09, RT3 = 2*1.71 - 0.171.
			name: "RAND -0.1", r: DefaultRegistration, rand: repeat(0, 3), calls: 3,
			want: []step{{ms(900), true}, {ms(1710), true}, {ms(3249), false}},
		},
		{
			// RAND at its top, just under +0.1: 1.1, 2*1.1 + 0.11, 2*2.31 + 0.231.
			name: "RAND +0.1", r: DefaultRegistration, rand: repeat(justBelowOne, 3), calls: 3,
			want: []step{{ms(1100), true}, {ms(2310), true}, {ms(4851), false}},
		},
		{
			// A different RAND each step proves it is drawn afresh:
			// -0.05, +0.05, 0 → 0.95, 1.9 + 0.0475, 2*1.9475.
			name: "RAND afresh", r: DefaultRegistration, rand: []float64{0.25, 0.75, 0.5}, calls: 3,
			want: []step{{ms(950), true}, {ms(1947.5), true}, {ms(3895), false}},
		},
		{
			name: "MRT cap", r: Retrans{IRT: s, MRT: 3 * s}, rand: []float64{0.5, 0.5, 0.5, 0.75, 0}, calls: 5,
			// 1, 2, 4 → MRT 3, then 6 → 3 + 0.05*3, then 2*3.15 - … → 3 - 0.3.
			want: []step{{1 * s, true}, {2 * s, true}, {3 * s, true}, {ms(3150), true}, {ms(2700), true}},
		},
		{
			// 1 + 2 = 3 s elapsed, RT3 4 s would pass MRD 5 s: clipped to 2 s, last.
			name: "MRD clips the last wait", r: Retrans{IRT: s, MRD: 5 * s}, rand: repeat(0.5, 3), calls: 4,
			want: []step{{1 * s, true}, {2 * s, true}, {2 * s, false}, {0, false}},
		},
		{
			// A wait ending exactly at MRD leaves no time for another send.
			name: "MRD reached exactly", r: Retrans{IRT: s, MRD: 3 * s}, rand: repeat(0.5, 2), calls: 3,
			want: []step{{1 * s, true}, {2 * s, false}, {0, false}},
		},
		{
			name: "MRC 1: no retransmission", r: Retrans{IRT: s, MRC: 1}, rand: repeat(0.5, 1), calls: 2,
			want: []step{{1 * s, false}, {0, false}},
		},
		{
			name: "MRC and MRD, MRD first", r: Retrans{IRT: s, MRC: 5, MRD: 2 * s}, rand: repeat(0.5, 2), calls: 3,
			want: []step{{1 * s, true}, {1 * s, false}, {0, false}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := walk(tt.r.Start(script(t, tt.rand...)), tt.calls)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("waits (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBackoffElapsedPastMRD(t *testing.T) {
	b := Retrans{IRT: time.Second, MRD: 10 * time.Second}.Start(script(t))
	if w, ok := b.Next(10 * time.Second); w != 0 || ok {
		t.Errorf("Next(MRD) = %v, %v; want 0, false", w, ok)
	}
}

func TestInformationRequestUnbounded(t *testing.T) {
	got := walk(InformationRequest.Start(script(t, repeat(0.5, 20)...)), 20)
	var want []step
	for i := range 20 {
		want = append(want, step{min(time.Second<<i, 3600*time.Second), true})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("waits (-want +got):\n%s", diff)
	}
}

func TestBackoffNoOverflow(t *testing.T) {
	b := Retrans{IRT: time.Hour}.Start(func() float64 { return justBelowOne })
	prev := time.Duration(0)
	for i := range 200 {
		w, ok := b.Next(0)
		if !ok || w < prev {
			t.Fatalf("step %d: Next = %v, %v after %v; want growing, ok", i, w, ok, prev)
		}
		prev = w
	}
}

// Over random RANDs: the RFC 8415 §15 bounds with IRT 1 s and MRC 3.
func TestBackoffBoundsProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		b := DefaultRegistration.Start(rng.Float64)
		var waits []time.Duration
		var elapsed time.Duration
		sends := 1
		for {
			w, ok := b.Next(elapsed)
			if !ok {
				break
			}
			waits = append(waits, w)
			elapsed += w
			sends++
		}
		if sends != 3 {
			t.Fatalf("sends = %d; want 3 with MRC 3", sends)
		}
		// RT1 = IRT(1 + RAND), RAND in [-0.1, 0.1).
		if w := waits[0]; w < ms(900) || w > ms(1100) {
			t.Fatalf("first retransmission after %v; want in [0.9 s, 1.1 s]", w)
		}
		// RT2 = RT1(2 + RAND): [0.9*1.9, 1.1*2.1] = [1.71 s, 2.31 s].
		if w := waits[1]; w < ms(1710) || w > ms(2310) {
			t.Fatalf("second retransmission after %v; want in [1.71 s, 2.31 s]", w)
		}
		if r := float64(waits[1]) / float64(waits[0]); r < 1.9-1e-9 || r > 2.1+1e-9 {
			t.Fatalf("RT2/RT1 = %v; want in [1.9, 2.1]", r)
		}
	}
}

func TestInitialDelay(t *testing.T) {
	tests := []struct {
		name string
		max  time.Duration
		u    float64
		want time.Duration
	}{
		{"bottom", InfMaxDelay, 0, 0},
		{"middle", InfMaxDelay, 0.5, 500 * time.Millisecond},
		{"top", InfMaxDelay, justBelowOne, time.Second - 1},
		{"no delay", 0, 0.5, 0},
	}
	for _, tt := range tests {
		if got := InitialDelay(tt.max, script(t, tt.u)); got != tt.want {
			t.Errorf("%s: InitialDelay(%v, %v) = %v; want %v", tt.name, tt.max, tt.u, got, tt.want)
		}
	}
}

func TestRetransValidate(t *testing.T) {
	tests := []struct {
		r       Retrans
		wantErr bool
	}{
		{DefaultRegistration, false},
		{InformationRequest, false},
		{Retrans{}, true},
		{Retrans{IRT: time.Second, MRC: -1}, true},
		{Retrans{IRT: time.Second, MRT: -1}, true},
	}
	for _, tt := range tests {
		if err := tt.r.Validate(); (err != nil) != tt.wantErr {
			t.Errorf("%+v.Validate() = %v; want error %v", tt.r, err, tt.wantErr)
		}
	}
}
