package ui

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// decisionsMetric is the counter the charts are drawn from (extauthz's
// meshward_authz_decisions_total, labels result and reason).
const decisionsMetric = "meshward_authz_decisions_total"

// Results of decisionsMetric the chart draws, in order.
var rateResults = []string{"allow", "deny", "error", "dry_run"}

// Rates samples meshward_authz_decisions_total from a gatherer at a fixed
// interval and keeps one window of samples: decisions per second by
// result, and deny reasons counted over the window.
type Rates struct {
	g        prometheus.Gatherer
	interval time.Duration
	window   time.Duration
	now      func() time.Time

	mu      sync.Mutex
	samples []sample // oldest first, spanning at most window
}

type sample struct {
	at       time.Time
	byResult map[string]float64
	denies   map[string]float64 // deny and error, by reason
}

// RatesOption sets an optional knob of NewRates.
type RatesOption func(*Rates)

// WithInterval sets the sampling interval. Default 10s.
func WithInterval(d time.Duration) RatesOption { return func(r *Rates) { r.interval = d } }

// WithWindow sets how far back the charts go. Default one hour.
func WithWindow(d time.Duration) RatesOption { return func(r *Rates) { r.window = d } }

// WithClock sets the clock. Default time.Now.
func WithClock(now func() time.Time) RatesOption { return func(r *Rates) { r.now = now } }

// NewRates samples g, the registry extauthz registers its metrics on.
func NewRates(g prometheus.Gatherer, opts ...RatesOption) *Rates {
	r := &Rates{g: g, interval: 10 * time.Second, window: time.Hour, now: time.Now}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Run samples until ctx ends, first at once.
func (r *Rates) Run(ctx context.Context) error {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		r.Sample()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sample takes one sample now (Run calls it; tests may too).
func (r *Rates) Sample() {
	s := r.read()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, s)
	cut := s.at.Add(-r.window)
	i := 0
	for i < len(r.samples)-1 && r.samples[i].at.Before(cut) {
		i++
	}
	r.samples = slices.Delete(r.samples, 0, i)
}

func (r *Rates) read() sample {
	s := sample{at: r.now(), byResult: map[string]float64{}, denies: map[string]float64{}}
	mfs, err := r.g.Gather()
	if err != nil && len(mfs) == 0 {
		return s
	}
	for _, mf := range mfs {
		if mf.GetName() != decisionsMetric {
			continue
		}
		for _, m := range mf.GetMetric() {
			var result, reason string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "result":
					result = l.GetValue()
				case "reason":
					reason = l.GetValue()
				}
			}
			v := m.GetCounter().GetValue()
			s.byResult[result] += v
			if result == "deny" || result == "error" {
				s.denies[reason] += v
			}
		}
	}
	return s
}

// RatePoint is the decisions per second, by result, over the interval
// that ends at Time (the last point's interval ends now and may be
// shorter).
type RatePoint struct {
	Time      time.Time          `json:"time"`
	PerSecond map[string]float64 `json:"perSecond"`
}

// ReasonCount is how many decisions were denied for one reason.
type ReasonCount struct {
	Reason string  `json:"reason"`
	Count  float64 `json:"count"`
}

// DecisionsResponse is GET /ui/api/decisions.
type DecisionsResponse struct {
	Enabled         bool        `json:"enabled"`
	IntervalSeconds float64     `json:"intervalSeconds"`
	WindowSeconds   float64     `json:"windowSeconds"`
	Now             time.Time   `json:"now"`
	Results         []string    `json:"results"`
	Points          []RatePoint `json:"points"` // oldest first
	// DenyReasons count deny and error decisions from the oldest sample
	// in the window to now, most frequent first.
	DenyReasons []ReasonCount `json:"denyReasons"`
	// Since is when that count starts (the oldest sample).
	Since time.Time `json:"since,omitzero"`
}

// Snapshot is the window's rates and, read now, its deny reasons.
func (r *Rates) Snapshot() DecisionsResponse {
	cur := r.read()
	r.mu.Lock()
	samples := slices.Clone(r.samples)
	r.mu.Unlock()
	out := DecisionsResponse{
		Enabled: true, IntervalSeconds: r.interval.Seconds(), WindowSeconds: r.window.Seconds(),
		Now: cur.at, Results: rateResults, Points: []RatePoint{}, DenyReasons: []ReasonCount{},
	}
	// The last point runs from the newest sample to now, so that the
	// chart moves before the next sample.
	live := samples
	if n := len(samples); n > 0 && cur.at.Sub(samples[n-1].at) >= time.Second {
		live = append(live, cur)
	}
	for i := 1; i < len(live); i++ {
		a, b := live[i-1], live[i]
		secs := b.at.Sub(a.at).Seconds()
		if secs <= 0 {
			continue
		}
		p := RatePoint{Time: b.at, PerSecond: map[string]float64{}}
		for _, res := range rateResults {
			p.PerSecond[res] = max(0, b.byResult[res]-a.byResult[res]) / secs
		}
		out.Points = append(out.Points, p)
	}
	var base map[string]float64
	if len(samples) > 0 {
		base, out.Since = samples[0].denies, samples[0].at
	}
	for reason, v := range cur.denies {
		if n := v - base[reason]; n > 0 {
			out.DenyReasons = append(out.DenyReasons, ReasonCount{Reason: reason, Count: n})
		}
	}
	slices.SortFunc(out.DenyReasons, func(a, b ReasonCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Reason, b.Reason))
	})
	return out
}
