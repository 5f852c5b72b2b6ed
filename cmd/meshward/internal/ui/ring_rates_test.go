package ui

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshward/meshward/extauthz/audit"
)

// TestDenyRing: only denies and errors are kept, newest first, the last
// n of them; the ring copies what it keeps.
func TestDenyRing(t *testing.T) {
	r := NewDenyRing(3)
	r.Tap(&audit.Record{Kind: audit.KindDecision, Decision: "allow", DecisionID: "allowed"})
	r.Tap(&audit.Record{Kind: audit.KindXDSNack, Message: "event"})
	if got := r.Last(); len(got) != 0 {
		t.Fatalf("allow and event kept: %+v", got)
	}
	v := []string{"/task/priority"}
	for i := range 5 {
		dec := "deny"
		if i == 4 {
			dec = "error"
		}
		r.Tap(&audit.Record{Kind: audit.KindAuthzDenial, Decision: dec, DecisionID: fmt.Sprint("d", i), Violations: v})
	}
	v[0] = "changed by the caller"
	got := r.Last()
	if len(got) != 3 || got[0].DecisionID != "d4" || got[1].DecisionID != "d3" || got[2].DecisionID != "d2" {
		t.Fatalf("Last = %+v, want d4 d3 d2", got)
	}
	if got[0].Decision != "error" || got[2].Violations[0] != "/task/priority" {
		t.Errorf("kept %+v", got)
	}
	if r.Cap() != 3 || NewDenyRing(0).Cap() != DefaultDenies {
		t.Errorf("capacities %d, %d", r.Cap(), NewDenyRing(0).Cap())
	}

	// Concurrent taps and reads (run with -race).
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range 200 {
				r.Tap(&audit.Record{Decision: "deny", DecisionID: fmt.Sprint(i)})
				_ = r.Last()
			}
		})
	}
	wg.Wait()
	if len(r.Last()) != 3 {
		t.Fatal("ring grew")
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestRates: per-second rates by result between samples; deny reasons
// counted from the oldest sample in the window to now; samples older
// than the window are dropped.
func TestRates(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: decisionsMetric, Help: "x"}, []string{"result", "reason"})
	reg.MustRegister(c)
	clk := &clock{t: t0}
	r := NewRates(reg, WithInterval(10*time.Second), WithWindow(time.Minute), WithClock(clk.now))

	r.Sample()
	c.WithLabelValues("allow", "allowed").Add(50)
	c.WithLabelValues("deny", "missing_role").Add(20)
	clk.add(10 * time.Second)
	r.Sample()
	c.WithLabelValues("deny", "schema_violation").Add(30)
	c.WithLabelValues("error", "eval_error").Add(1)

	s := r.Snapshot()
	if len(s.Points) != 1 {
		t.Fatalf("points %+v, want 1", s.Points)
	}
	if p := s.Points[0].PerSecond; p["allow"] != 5 || p["deny"] != 2 || p["error"] != 0 || p["dry_run"] != 0 {
		t.Errorf("rates %v, want allow 5/s deny 2/s", p)
	}
	want := []ReasonCount{{"schema_violation", 30}, {"missing_role", 20}, {"eval_error", 1}}
	if fmt.Sprint(s.DenyReasons) != fmt.Sprint(want) || !s.Since.Equal(t0) {
		t.Errorf("reasons %v since %v, want %v since %v", s.DenyReasons, s.Since, want, t0)
	}

	clk.add(5 * time.Second) // no sample yet: a live point from the last one to now
	s = r.Snapshot()
	if len(s.Points) != 2 || s.Points[1].PerSecond["deny"] != 6 || !s.Points[1].Time.Equal(clk.now()) {
		t.Errorf("live point %+v, want deny 30/5s = 6/s ending now", s.Points)
	}

	for range 7 {
		clk.add(10 * time.Second)
		r.Sample()
	}
	s = r.Snapshot()
	if len(s.Points) != 6 || !s.Since.Equal(t0.Add(25*time.Second)) {
		t.Fatalf("after 85s with a 1m window: %d points since %v, want 6 since +25s", len(s.Points), s.Since)
	}
	if len(s.DenyReasons) != 0 {
		t.Errorf("reasons %v: the denies are older than the window", s.DenyReasons)
	}
}
