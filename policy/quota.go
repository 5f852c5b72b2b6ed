package policy

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// QuotaConfig is a token bucket per caller SPIFFE ID: every allowed
// request it applies to takes one token; without one the request is
// denied with 429 and a retry-after. Buckets are kept in each replica's
// memory (exact per replica, not shared) and start full; Store.Reload
// hands the buckets of an unchanged quota on to the new revision.
type QuotaConfig struct {
	Name string `yaml:"name"`
	// Callers are the SPIFFE IDs (exact, or with `*` segments) the quota
	// applies to, each with its own bucket; empty: every caller.
	Callers []string `yaml:"callers"`
	// Rule limits the quota to requests allowed by this rule.
	Rule string `yaml:"rule"`
	// Tool limits the quota to MCP tools/call messages of this tool.
	Tool string `yaml:"tool"`
	// Rate requests per Per are refilled. Required.
	Rate int `yaml:"rate"`
	// Per is the refill period, e.g. 1s, 1m. Default 1m.
	Per time.Duration `yaml:"per"`
	// Burst is the bucket's size. Default Rate.
	Burst int `yaml:"burst"`
}

// ReasonRateLimited is the reason and code of a request over its quota (429).
const ReasonRateLimited = "rate_limited"

// maxBuckets bounds the callers one quota tracks; beyond it, buckets that
// have refilled are dropped, and if none has, a new caller is denied.
const maxBuckets = 100000

// SetDefaults fills in defaults.
func (q *QuotaConfig) SetDefaults() {
	if q.Per == 0 {
		q.Per = time.Minute
	}
	if q.Burst == 0 {
		q.Burst = q.Rate
	}
}

func (q *QuotaConfig) validate(p, trustDomain string, rules map[string]bool) []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if q.Name == "" {
		add("%s.name: required", p)
	}
	for i, c := range q.Callers {
		if err := validateIDPattern(c, trustDomain); err != nil {
			add("%s.callers[%d]: %v", p, i, err)
		}
	}
	if q.Rule != "" && !rules[q.Rule] {
		add("%s.rule: unknown rule %q", p, q.Rule)
	}
	if q.Rate < 1 {
		add("%s.rate: must be at least 1", p)
	}
	if q.Per < time.Millisecond {
		add("%s.per: must be at least 1ms", p)
	}
	if q.Burst < 1 {
		add("%s.burst: must be at least 1", p)
	}
	return errs
}

// quota is a compiled QuotaConfig with its buckets.
type quota struct {
	name    string
	exact   map[string]bool
	pattern [][]string
	all     bool
	rule    string
	tool    string
	perTok  time.Duration // refill time of one token
	burst   float64

	// key is the quota's configuration: a new revision keeps the buckets
	// of a quota whose configuration did not change.
	key string

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func compileQuotas(c *Config, trustDomain string) []*quota {
	var qs []*quota
	for _, qc := range c.Quotas {
		q := &quota{name: qc.Name, exact: map[string]bool{}, all: len(qc.Callers) == 0, rule: qc.Rule, tool: qc.Tool,
			perTok: qc.Per / time.Duration(qc.Rate), burst: float64(qc.Burst), buckets: map[string]*bucket{},
			key: fmt.Sprintf("%#v", qc)}
		if q.perTok <= 0 {
			q.perTok = 1
		}
		for _, id := range qc.Callers {
			if strings.Contains(id, "*") {
				q.pattern = append(q.pattern, strings.Split(strings.TrimPrefix(id, "spiffe://"+trustDomain+"/"), "/"))
			} else {
				q.exact[id] = true
			}
		}
		qs = append(qs, q)
	}
	return qs
}

func (q *quota) applies(in *Input, d *Decision, trustDomain string) bool {
	if q.rule != "" && d.Rule != q.rule {
		return false
	}
	if q.tool != "" && (!in.rpc.on || in.rpc.method != MethodToolsCall || in.rpc.tool != q.tool) {
		return false
	}
	if q.all || q.exact[in.Principal] {
		return true
	}
	path, ok := strings.CutPrefix(in.Principal, "spiffe://"+trustDomain+"/")
	if !ok {
		return false
	}
	for _, p := range q.pattern {
		if matchSegments(p, path, true) {
			return true
		}
	}
	return false
}

// take takes a token from key's bucket at now; when there is none it
// returns how long until there is.
func (q *quota) take(key string, now time.Time) (bool, time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	b := q.buckets[key]
	if b == nil {
		if len(q.buckets) >= maxBuckets {
			q.sweep(now)
		}
		if len(q.buckets) >= maxBuckets {
			return false, q.perTok
		}
		b = &bucket{tokens: q.burst, last: now}
		q.buckets[strings.Clone(key)] = b // not a slice of the request
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = math.Min(q.burst, b.tokens+float64(el)/float64(q.perTok))
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) * float64(q.perTok))
}

// sweep drops the buckets that are full again: they are what a new
// bucket would be.
func (q *quota) sweep(now time.Time) {
	for k, b := range q.buckets {
		if b.tokens+float64(now.Sub(b.last))/float64(q.perTok) >= q.burst {
			delete(q.buckets, k)
		}
	}
}

// applyQuotas takes a token from every quota that applies to the allowed
// decision d, and turns d into a 429 deny when one has none left (tokens
// already taken from the others are spent).
func (r *Revision) applyQuotas(in *Input, d *Decision) {
	if len(r.quotas) == 0 || !d.Allow || d.Err != nil {
		return
	}
	now := r.now()
	for _, q := range r.quotas {
		if !q.applies(in, d, r.trustDomain) {
			continue
		}
		ok, wait := q.take(in.Principal, now)
		if ok {
			continue
		}
		secs := int(math.Ceil(wait.Seconds()))
		if secs < 1 {
			secs = 1
		}
		deny(d, http.StatusTooManyRequests, ReasonRateLimited, d.Rule,
			"quota "+strconv.Quote(q.name)+" is used up for this caller; retry after "+strconv.Itoa(secs)+"s")
		d.DryRun = false
		d.RetryAfter, d.Quota = secs, q.name
		return
	}
}

func validateQuotas(c *Config, path, trustDomain string) error {
	var errs []error
	rules := map[string]bool{}
	for _, r := range c.Rules {
		rules[r.Name] = true
	}
	names := map[string]bool{}
	for i := range c.Quotas {
		q := &c.Quotas[i]
		p := fmt.Sprintf("%s.quotas[%d]", path, i)
		if names[q.Name] && q.Name != "" {
			errs = append(errs, fmt.Errorf("%s.name: quota %q defined twice", p, q.Name))
		}
		names[q.Name] = true
		errs = append(errs, q.validate(p, trustDomain, rules)...)
	}
	return errors.Join(errs...)
}

// adoptQuotas takes over, before r is served, the buckets of prev's
// quotas that r has unchanged (same name and settings), so a reload does
// not refill them; a changed or new quota starts full. The quota values
// are shared: prev, still serving until the swap, takes from the same
// buckets.
func (r *Revision) adoptQuotas(prev *Revision) {
	if prev == nil {
		return
	}
	for i, q := range r.quotas {
		for _, old := range prev.quotas {
			if old.key == q.key {
				r.quotas[i] = old
				break
			}
		}
	}
}
