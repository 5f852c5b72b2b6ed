// Package detect watches the audit stream for identities that cross a
// threshold — too many denies, authentication failures or schema
// violations within a window — and raises a security event, counts it
// and, when a rule says so, quarantines the identity (or, in dry-run
// mode, says it would).
//
// It is off the Check path: Tap, called by the audit logger's writer for
// each record it writes, copies the few fields it needs into a bounded
// queue without blocking; Run counts them on its own goroutine. Memory is
// bounded: at most Config.MaxIdentities identities are tracked (the least
// recently seen is forgotten first) and a sliding window holds at most
// its threshold of timestamps.
package detect

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/extauthz/audit"
)

// By is who a quarantine made by the detector is recorded as.
const By = "detector"

// Reason codes that are not counted: a quarantined identity's denies are
// the quarantine working, not more misbehaviour.
const reasonQuarantined = "quarantined"

// Schema reasons counted as schema violations besides any record with
// violations.
var schemaReasons = map[string]bool{"schema_invalid": true, "invalid_tool_arguments": true}

// Actions a firing rule takes (label of meshward_detections_total and the
// event's detail "action").
const (
	ActionAlert              = "alert"               // quarantine: off
	ActionWouldQuarantine    = "would_quarantine"    // quarantine: dryRun
	ActionQuarantined        = "quarantined"         // quarantine: enforce, done
	ActionAlreadyQuarantined = "already_quarantined" // quarantine: enforce, nothing to do
	ActionQuarantineFailed   = "quarantine_failed"   // quarantine: enforce, not done (see detail "error")
)

// Log field names.
const (
	logRule     = "rule"
	logIdentity = "spiffe_id"
	logAction   = "action"
	logCount    = "count"
	logError    = "error"
)

// EventSink records a security event (an *audit.Logger is one).
type EventSink interface {
	Event(kind, message string, fields map[string]string) error
}

// Quarantiner quarantines an identity with a reason, as `meshward
// quarantine` does; changed is false when it was already quarantined. It
// refuses identities that cannot be quarantined (not a workload SPIFFE ID
// of the trust domain, meshward's own).
type Quarantiner func(spiffeID, reason string) (changed bool, err error)

// Option sets an optional dependency of New.
type Option func(*Detector)

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(d *Detector) { d.log = l } }

// WithEvents sets where security events go. Default: only logged.
func WithEvents(e EventSink) Option { return func(d *Detector) { d.events = e } }

// WithQuarantiner sets how rules with quarantine: enforce quarantine.
// Without one, such a rule's action is quarantine_failed.
func WithQuarantiner(q Quarantiner) Option { return func(d *Detector) { d.quarantine = q } }

// WithRegisterer registers the metrics on r. Default: not registered.
func WithRegisterer(r prometheus.Registerer) Option { return func(d *Detector) { d.reg = r } }

// WithNow sets the clock used for a record without a time. Default
// time.Now. Windows are measured with the records' own times (when the
// decision was made), not with when the detector sees them.
func WithNow(now func() time.Time) Option { return func(d *Detector) { d.now = now } }

// Detector counts records per identity and rule. Tap is safe for
// concurrent use; Run owns the counts.
type Detector struct {
	rules      []*rule
	max        int
	in         chan observation
	log        *slog.Logger
	events     EventSink
	quarantine Quarantiner
	reg        prometheus.Registerer
	now        func() time.Time
	m          *metrics
	dropLog    rate.Sometimes
	tracked    atomic.Int64

	// Used by the Run goroutine only.
	ids       map[string]*list.Element // of *entry
	lru       *list.List               // front: most recently seen
	maxWindow int64
}

// observation is what Tap keeps of a record.
type observation struct {
	authn      bool // authn_failure; otherwise authz_denial
	schema     bool // violations, or a schema reason
	principal  string
	unixNano   int64
	haveTime   bool
	decisionID string
}

type rule struct {
	Rule
	window int64 // nanoseconds
	fixed  bool
	count  map[string]prometheus.Counter // by action
}

// entry is one tracked identity.
type entry struct {
	id    string
	last  int64 // newest record time seen
	state []window
}

// window is one rule's count for one identity.
type window struct {
	times []int64 // sliding: times of matching records, oldest first from head
	head  int
	start int64 // fixed: start of the current window
	n     int   // fixed: matching records in it
}

// New builds a Detector from a configuration (defaults applied to a copy,
// then validated).
func New(cfg Config, opts ...Option) (*Detector, error) {
	cfg.Rules = append([]Rule(nil), cfg.Rules...)
	cfg.SetDefaults()
	if err := cfg.Validate("detection"); err != nil {
		return nil, fmt.Errorf("detection: %w", err)
	}
	d := &Detector{
		max:     cfg.MaxIdentities,
		in:      make(chan observation, cfg.QueueSize),
		log:     slog.New(slog.DiscardHandler),
		now:     time.Now,
		dropLog: rate.Sometimes{Interval: 10 * time.Second},
		ids:     map[string]*list.Element{},
		lru:     list.New(),
	}
	for _, o := range opts {
		o(d)
	}
	for _, r := range cfg.Rules {
		ru := &rule{Rule: r, window: int64(time.Duration(r.Window)), fixed: r.WindowType == WindowFixed}
		d.rules = append(d.rules, ru)
		d.maxWindow = max(d.maxWindow, ru.window)
	}
	m, err := newMetrics(d.reg, d.rules, func() float64 { return float64(d.tracked.Load()) })
	if err != nil {
		return nil, err
	}
	d.m = m
	return d, nil
}

// Tap is an audit.Tap: it keeps the denies of a known principal that are
// not the quarantine's own, without blocking. When the queue is full the
// record is not counted (meshward_detection_records_dropped_total).
func (d *Detector) Tap(rec *audit.Record) {
	if rec.Principal == "" || rec.Reason == reasonQuarantined ||
		(rec.Kind != audit.KindAuthzDenial && rec.Kind != audit.KindAuthnFailure) {
		return
	}
	o := observation{
		authn:      rec.Kind == audit.KindAuthnFailure,
		schema:     len(rec.Violations) > 0 || schemaReasons[rec.Reason],
		principal:  rec.Principal,
		decisionID: rec.DecisionID,
	}
	if !rec.Time.IsZero() {
		o.unixNano, o.haveTime = rec.Time.UnixNano(), true
	}
	select {
	case d.in <- o:
	default:
		d.m.dropped.Inc()
		d.dropLog.Do(func() {
			d.log.Warn("detection queue full: a deny was not counted (logged at most every 10s; counted in meshward_detection_records_dropped_total)")
		})
	}
}

// Run counts what Tap queued until ctx is done.
func (d *Detector) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case o := <-d.in:
			d.observe(o)
		}
	}
}

// observe counts o for its identity under every rule it matches and fires
// the rules that reach their threshold.
func (d *Detector) observe(o observation) {
	if !o.haveTime {
		o.unixNano = d.now().UnixNano()
	}
	e := d.entry(o.principal)
	t := max(o.unixNano, e.last) // a record older than one seen counts as now
	e.last = t
	for i, r := range d.rules {
		if !r.matches(o) {
			continue
		}
		if n, fired := e.state[i].add(r, t); fired {
			d.fire(r, o, n)
		}
	}
	d.expire(t)
}

func (r *rule) matches(o observation) bool {
	switch r.Match {
	case MatchAuthnFailures:
		return o.authn
	case MatchSchemaViolations:
		return !o.authn && o.schema
	default: // denies
		return true
	}
}

// add counts one matching record at t; fired is true (with the count)
// when the threshold is reached, and counting starts again from zero.
func (w *window) add(r *rule, t int64) (n int, fired bool) {
	if r.fixed {
		start := t - t%r.window
		if start != w.start || w.n == 0 {
			w.start, w.n = start, 0
		}
		w.n++
		if w.n >= r.Threshold {
			n, w.n = w.n, 0
			return n, true
		}
		return 0, false
	}
	cut := t - r.window // the window is (t-window, t]
	for w.head < len(w.times) && w.times[w.head] <= cut {
		w.head++
	}
	if w.head > 0 && 2*w.head >= len(w.times) {
		k := copy(w.times, w.times[w.head:])
		w.times, w.head = w.times[:k], 0
	}
	w.times = append(w.times, t)
	if n = len(w.times) - w.head; n >= r.Threshold {
		w.times, w.head = w.times[:0], 0
		return n, true
	}
	return 0, false
}

// entry returns id's entry, most recently seen now, tracking it (and
// forgetting the least recently seen identity when full) if new.
func (d *Detector) entry(id string) *entry {
	if el, ok := d.ids[id]; ok {
		d.lru.MoveToFront(el)
		return el.Value.(*entry) //nolint:forcetypeassert // the list holds only *entry
	}
	if d.lru.Len() >= d.max {
		d.forget(d.lru.Back())
		d.m.evicted.Inc()
	}
	e := &entry{id: id, state: make([]window, len(d.rules))}
	d.ids[id] = d.lru.PushFront(e)
	d.tracked.Store(int64(d.lru.Len()))
	return e
}

// expire forgets identities not seen for the longest window: nothing
// they counted can still be in a window.
func (d *Detector) expire(now int64) {
	for el := d.lru.Back(); el != nil; el = d.lru.Back() {
		if e := el.Value.(*entry); now-e.last < d.maxWindow { //nolint:forcetypeassert // the list holds only *entry
			return
		}
		d.forget(el)
	}
}

func (d *Detector) forget(el *list.Element) {
	delete(d.ids, el.Value.(*entry).id) //nolint:forcetypeassert // the list holds only *entry
	d.lru.Remove(el)
	d.tracked.Store(int64(d.lru.Len()))
}

var matchNames = map[string]string{
	MatchDenies:           "denies",
	MatchAuthnFailures:    "authentication failures",
	MatchSchemaViolations: "schema violations",
}

// fire raises the rule's security event for o's identity and takes its
// action.
func (d *Detector) fire(r *rule, o observation, n int) {
	window := time.Duration(r.window).String()
	what := fmt.Sprintf("detection rule %q: %d %s by %s within %s (%s window)", r.Name, n, matchNames[r.Match], o.principal, window, r.WindowType)
	detail := map[string]string{
		"rule":        r.Name,
		"spiffe_id":   o.principal,
		"match":       r.Match,
		"count":       strconv.Itoa(n),
		"threshold":   strconv.Itoa(r.Threshold),
		"window":      window,
		"window_type": r.WindowType,
		"quarantine":  r.Quarantine,
	}
	if o.decisionID != "" {
		detail["decision_id"] = o.decisionID // the record that crossed the threshold
	}
	action, msg := ActionAlert, what
	switch r.Quarantine {
	case QuarantineDryRun:
		action, msg = ActionWouldQuarantine, what+"; would quarantine it (dry run: not quarantined)"
	case QuarantineEnforce:
		action, msg = d.quarantineID(o.principal, what, detail)
	}
	detail["action"] = action
	d.m.detections(r, action).Inc()
	d.log.Warn(msg, logRule, r.Name, logIdentity, o.principal, logAction, action, logCount, n)
	if d.events == nil {
		return
	}
	if err := d.events.Event(audit.KindDetection, msg, detail); err != nil {
		d.log.Error("audit of a detection failed", logRule, r.Name, logIdentity, o.principal, logError, err)
	}
}

func (d *Detector) quarantineID(id, what string, detail map[string]string) (action, msg string) {
	if d.quarantine == nil {
		detail["error"] = "no quarantiner configured"
		return ActionQuarantineFailed, what + "; NOT quarantined: no quarantiner configured"
	}
	changed, err := d.quarantine(id, what)
	switch {
	case err != nil:
		detail["error"] = err.Error()
		return ActionQuarantineFailed, what + "; NOT quarantined: " + err.Error()
	case !changed:
		return ActionAlreadyQuarantined, what + "; already quarantined"
	default:
		return ActionQuarantined, what + "; quarantined"
	}
}

// StateFile is a Quarantiner that adds the identity to the quarantine
// state file at path, as `meshward quarantine` does, recorded as by
// "detector"; check refuses identities that cannot be quarantined.
// A running serve's watch of the file applies and audits it.
func StateFile(path string, check func(spiffeID string) error, now func() time.Time) Quarantiner {
	return func(id, reason string) (bool, error) {
		if err := check(id); err != nil {
			return false, err
		}
		_, err := quarantine.Quarantine(path, quarantine.Entry{SPIFFEID: id, Reason: reason, By: By, At: now().UTC()})
		if errors.Is(err, quarantine.ErrNoChange) {
			return false, nil
		}
		return err == nil, err
	}
}
