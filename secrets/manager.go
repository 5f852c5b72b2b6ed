package secrets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"golang.org/x/time/rate"
)

// Source is what the Manager needs from a source of key material;
// *LocalCA and *Vault implement it.
type Source interface {
	IssueSVID(ctx context.Context, id string) (*SVID, error)
	Bundle(ctx context.Context) (*Bundle, error)
	Secret(ctx context.Context, name string) ([]byte, error)
	// SecretNames lists the generic secrets the source serves.
	SecretNames() []string
}

// runner is a source with a lifecycle of its own (Vault's token).
type runner interface {
	Run(ctx context.Context) error
}

// Manager keeps the current key material: an SVID per registered SPIFFE
// ID, re-issued at half of its life (+-10 % jitter) at a capped rate, the
// trust bundle and the generic secrets, polled. While the source fails it
// keeps serving the last good material and retries with capped
// exponential backoff. Subscribers learn which names changed.
type Manager struct {
	src Source
	o   options
	lim *rate.Limiter

	mu      sync.Mutex
	ids     map[string]*entry
	bundle  *Bundle
	bundErr error // last bundle poll failure, for Ready
	// failingSecrets are the generic secrets whose last poll failed, so
	// that their recovery is logged.
	failingSecrets map[string]struct{}
	secrets        map[string][]byte
	subs           map[*Subscription]struct{}
	wake           chan struct{}
}

type entry struct {
	id       string
	svid     *SVID
	issued   time.Time // when svid was received
	due      time.Time // next issuance
	failures int
	retry    *backoff.ExponentialBackOff // delays between failed issuances; nil until one fails
	lastErr  error
	inflight bool
	required bool          // registered up front: readiness waits for it
	first    chan struct{} // closed at the first SVID
}

// New builds the source cfg names (local CA or Vault) and its Manager.
// Options given here override those taken from cfg.
func New(cfg Config, opts ...Option) (*Manager, error) {
	cfg.SetDefaults()
	if err := cfg.Validate("secrets"); err != nil {
		return nil, fmtErr("secrets", err)
	}
	if o := buildOptions(opts); o.metrics != nil {
		// One set of metrics for the source and the Manager.
		opts = append(slices.Clip(opts), WithMetrics(o.metrics))
	}
	switch cfg.Source {
	case SourceVault:
		v, err := NewVault(cfg.Vault, cfg.CertTTL, opts...)
		if err != nil {
			return nil, fmtErr("secrets", err)
		}
		base := []Option{WithIssueRate(cfg.Vault.IssueRate), WithPollInterval(cfg.Vault.PollInterval)}
		return NewManager(v, append(base, opts...)...), nil
	default:
		ca, err := NewLocalCA(cfg.Local, cfg.CertTTL, opts...)
		if err != nil {
			return nil, fmtErr("secrets", err)
		}
		return NewManager(ca, opts...), nil
	}
}

// NewManager manages the material of src. If src has a Run method (Vault)
// the Manager's Run runs it too.
func NewManager(src Source, opts ...Option) *Manager {
	o := buildOptions(opts)
	lim := rate.NewLimiter(rate.Inf, 1)
	if o.issueRate > 0 {
		lim = rate.NewLimiter(rate.Limit(o.issueRate), max(1, int(o.issueRate/10)))
	}
	return &Manager{
		src: src, o: o, lim: lim,
		ids:     map[string]*entry{},
		secrets: map[string][]byte{},
		subs:    map[*Subscription]struct{}{},
		wake:    make(chan struct{}, 1),
	}
}

// Source returns the source the Manager draws from.
func (m *Manager) Source() Source { return m.src }

// Register adds SPIFFE IDs whose SVIDs are issued as soon as Run runs and
// kept fresh; Ready waits for them.
func (m *Manager) Register(ids ...string) error {
	var errs []error
	for _, id := range ids {
		if err := ValidateID(id); err != nil {
			errs = append(errs, err)
			continue
		}
		m.register(id, true)
	}
	return fmtErrJoin("secrets: register", errs)
}

func fmtErrJoin(op string, errs []error) error {
	if err := errors.Join(errs...); err != nil {
		return fmtErr(op, err)
	}
	return nil
}

func (m *Manager) register(id string, required bool) *entry {
	m.mu.Lock()
	e, ok := m.ids[id]
	if !ok {
		e = &entry{id: id, first: make(chan struct{})}
		m.ids[id] = e
	}
	e.required = e.required || required
	m.mu.Unlock()
	if !ok {
		m.poke()
	}
	return e
}

// Unregister stops keeping id's SVID.
func (m *Manager) Unregister(id string) {
	m.mu.Lock()
	delete(m.ids, id)
	m.mu.Unlock()
	m.o.metrics.certExpiry.DeleteLabelValues(id)
}

// Retire unregisters every id of prev that is not in next: the SPIFFE
// IDs of the agents a reload removed. Their SVIDs stop rotating and no
// longer count for Ready. Call it once next is in use, so that nothing
// asks for a retired id again (SVID would register it anew).
func (m *Manager) Retire(prev, next []string) {
	keep := make(map[string]bool, len(next))
	for _, id := range next {
		keep[id] = true
	}
	for _, id := range prev {
		if !keep[id] {
			m.Unregister(id)
		}
	}
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// SVID returns the current SVID for id. An id not registered yet is
// registered, and SVID waits (within ctx) for its first issuance, which
// needs Run to be running.
func (m *Manager) SVID(ctx context.Context, id string) (*SVID, error) {
	if err := ValidateID(id); err != nil {
		return nil, fmtErr("secrets: svid", err)
	}
	e := m.register(id, false)
	m.mu.Lock()
	s, first := e.svid, e.first
	m.mu.Unlock()
	if s != nil {
		return s, nil
	}
	select {
	case <-first:
	case <-ctx.Done():
		return nil, fmt.Errorf("secrets: svid %s: %w: %w", id, ErrNotReady, ctx.Err())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return e.svid, nil
}

// Bundle returns the current trust bundle, fetching it if none was yet.
func (m *Manager) Bundle(ctx context.Context) (*Bundle, error) {
	m.mu.Lock()
	b := m.bundle
	m.mu.Unlock()
	if b != nil {
		return b, nil
	}
	b, err := m.src.Bundle(ctx)
	if err != nil {
		return nil, fmtErr("secrets: bundle", err)
	}
	m.mu.Lock()
	if m.bundle == nil {
		m.bundle = b
		m.o.metrics.bundleRoots.Set(float64(len(b.Roots)))
	}
	b = m.bundle
	m.mu.Unlock()
	return b, nil
}

// Secret returns the current value of a generic secret, fetching it if it
// was not polled yet. The caller must not modify the slice.
func (m *Manager) Secret(ctx context.Context, name string) ([]byte, error) {
	m.mu.Lock()
	v, ok := m.secrets[name]
	m.mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := m.src.Secret(ctx, name)
	if err != nil {
		return nil, fmtErr("secrets: secret", err)
	}
	m.mu.Lock()
	if _, ok := m.secrets[name]; !ok {
		m.secrets[name] = v
	}
	v = m.secrets[name]
	m.mu.Unlock()
	return v, nil
}

// SecretNames lists the generic secrets the source serves.
func (m *Manager) SecretNames() []string { return m.src.SecretNames() }

// Ready reports nil when every SVID registered with Register has been
// issued, the trust bundle is known, and no served SVID has less than
// 10 % of its life left.
func (m *Manager) Ready() error {
	now := m.o.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bundle == nil {
		if m.bundErr != nil {
			return fmt.Errorf("secrets: %w: no trust bundle yet: %w", ErrNotReady, m.bundErr)
		}
		return fmt.Errorf("secrets: %w: no trust bundle yet", ErrNotReady)
	}
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(m.ids)) {
		e := m.ids[id]
		switch {
		case e.svid == nil && e.required && e.lastErr != nil:
			errs = append(errs, fmt.Errorf("no certificate yet for %s: %w", id, e.lastErr))
		case e.svid == nil && e.required:
			errs = append(errs, fmt.Errorf("no certificate yet for %s", id))
		case e.svid != nil && !now.Before(e.svid.NotAfter):
			errs = append(errs, fmt.Errorf("certificate for %s expired at %v", id, e.svid.NotAfter))
		case e.svid != nil && e.svid.NotAfter.Sub(now) < e.svid.NotAfter.Sub(e.issued)/10:
			errs = append(errs, fmt.Errorf("certificate for %s expires at %v, less than 10%% of its life left", id, e.svid.NotAfter))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("secrets: %w: %w", ErrNotReady, errors.Join(errs...))
	}
	return nil
}

// Run issues and rotates the SVIDs, polls the bundle and the secrets, and
// runs the source's own lifecycle (Vault's token), until ctx ends; then
// it returns nil once every goroutine it started has stopped.
func (m *Manager) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	if r, ok := m.src.(runner); ok {
		wg.Go(func() {
			if err := r.Run(ctx); err != nil {
				m.o.log.Error("secrets source stopped", logErr, err)
			}
		})
	}
	wg.Go(func() { m.pollLoop(ctx) })
	m.rotateLoop(ctx, &wg)
	return nil
}

func (m *Manager) rotateLoop(ctx context.Context, wg *sync.WaitGroup) {
	sem := make(chan struct{}, m.o.workers)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := m.o.now()
		var due []*entry
		var next time.Time
		m.mu.Lock()
		for _, e := range m.ids {
			switch {
			case e.inflight:
			case !e.due.After(now):
				e.inflight = true
				due = append(due, e)
			case next.IsZero() || e.due.Before(next):
				next = e.due
			}
		}
		m.mu.Unlock()
		for _, e := range due {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Go(func() {
				defer func() { <-sem }()
				m.issue(ctx, e)
				m.poke()
			})
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(now), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-timer.C:
		}
	}
}

// issue issues one SVID for e and schedules the next issuance.
func (m *Manager) issue(ctx context.Context, e *entry) {
	err := m.lim.Wait(ctx)
	var s *SVID
	if err == nil {
		s, err = m.src.IssueSVID(ctx, e.id)
	}
	now := m.o.now()
	if err == nil {
		err = s.Check(e.id, now) // whatever the source, nothing unchecked is served
	}
	if err != nil {
		m.mu.Lock()
		e.inflight = false
		e.failures++
		e.lastErr = err
		if e.retry == nil {
			e.retry = newBackoff(m.o.minBackoff, m.o.maxBackoff)
		}
		d := e.retry.NextBackOff()
		e.due = now.Add(d)
		served := e.svid
		m.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		result := resultError
		kind := EventIssuance
		if errors.Is(err, ErrRejected) {
			result, kind = resultRejected, EventCertRejected
		}
		m.o.metrics.issuance.WithLabelValues(result).Inc()
		switch {
		case served == nil:
			m.o.log.Warn("certificate issuance failed: none issued yet for this ID, so nothing is served for it", logID, e.id, logErr, err, logAttempt, e.failures, logRetryIn, d)
		case !now.Before(served.NotAfter):
			m.o.log.Warn("certificate issuance failed: the certificate served for this ID has expired, so peers reject it", logID, e.id, logErr, err, logAttempt, e.failures, logRetryIn, d, logExpiry, served.NotAfter)
		default:
			m.o.log.Warn("certificate issuance failed: serving the last good one", logID, e.id, logErr, err, logAttempt, e.failures, logRetryIn, d, logExpiry, served.NotAfter)
		}
		m.o.event(kind, "certificate issuance failed", slog.String(logID, e.id), slog.String(logErr, err.Error()))
		return
	}
	m.o.metrics.issuance.WithLabelValues(resultSuccess).Inc()
	m.mu.Lock()
	e.inflight = false
	if m.ids[e.id] != e { // unregistered meanwhile
		m.mu.Unlock()
		return
	}
	failures := e.failures
	e.svid, e.issued, e.failures, e.lastErr, e.retry = s, now, 0, nil, nil
	e.due = renewAt(now, s.NotAfter, rand.Float64()) //nolint:gosec // G404: renewal-time jitter, not a secret
	select {
	case <-e.first:
	default:
		close(e.first)
	}
	m.notifyLocked(Change{SVIDs: []string{e.id}})
	m.mu.Unlock()
	m.o.metrics.certExpiry.WithLabelValues(e.id).Set(float64(s.NotAfter.Unix()))
	if failures > 0 {
		m.o.log.Info("certificate issued again after failures", logID, e.id, logExpiry, s.NotAfter, logAttempt, failures+1)
	} else {
		m.o.log.Debug("certificate issued", logID, e.id, logExpiry, s.NotAfter)
	}
}

func (m *Manager) pollLoop(ctx context.Context) {
	t := time.NewTicker(m.o.pollInterval)
	defer t.Stop()
	for {
		m.pollOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollOnce refreshes the bundle and every secret, keeping the last good
// value of each on failure, and notifies what changed.
func (m *Manager) pollOnce(ctx context.Context) {
	var ch Change
	b, err := m.src.Bundle(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		m.o.metrics.secretPollError.WithLabelValues("bundle").Inc()
		m.mu.Lock()
		m.bundErr = err
		have := m.bundle != nil
		m.mu.Unlock()
		if have {
			m.o.log.Warn("trust bundle poll failed: serving the last good one", logErr, err)
		} else {
			m.o.log.Warn("trust bundle poll failed: no bundle yet, so none is served", logErr, err)
		}
	} else {
		m.mu.Lock()
		recovered := m.bundErr != nil
		m.bundErr = nil
		if !b.Equal(m.bundle) {
			m.bundle = b
			ch.Bundle = true
		}
		m.mu.Unlock()
		m.o.metrics.bundleRoots.Set(float64(len(b.Roots)))
		if recovered {
			m.o.log.Info("trust bundle poll succeeded again", logRoots, len(b.Roots))
		}
	}
	for _, name := range m.src.SecretNames() {
		v, err := m.src.Secret(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.o.metrics.secretPollError.WithLabelValues("secret").Inc()
			m.mu.Lock()
			_, have := m.secrets[name]
			if m.failingSecrets == nil {
				m.failingSecrets = map[string]struct{}{}
			}
			m.failingSecrets[name] = struct{}{}
			m.mu.Unlock()
			if have {
				m.o.log.Warn("secret poll failed: serving the last good value", logName, name, logErr, err)
			} else {
				m.o.log.Warn("secret poll failed: no value yet, so none is served", logName, name, logErr, err)
			}
			continue
		}
		m.mu.Lock()
		_, recovered := m.failingSecrets[name]
		delete(m.failingSecrets, name)
		if old, ok := m.secrets[name]; !ok || !bytes.Equal(old, v) {
			m.secrets[name] = v
			ch.Secrets = append(ch.Secrets, name)
		}
		m.mu.Unlock()
		if recovered {
			m.o.log.Info("secret poll succeeded again", logName, name)
		}
	}
	if ch.Bundle || len(ch.Secrets) > 0 {
		m.mu.Lock()
		m.notifyLocked(ch)
		m.mu.Unlock()
	}
}

// Change says which material changed: SPIFFE IDs whose SVID was
// re-issued, whether the trust bundle changed, and generic secret names.
type Change struct {
	SVIDs   []string
	Bundle  bool
	Secrets []string
}

// Empty reports whether c names nothing.
func (c Change) Empty() bool { return len(c.SVIDs) == 0 && !c.Bundle && len(c.Secrets) == 0 }

// Subscription receives changes, coalesced: a slow reader gets one Change
// naming everything that changed since its last Take, never a backlog.
type Subscription struct {
	m       *Manager
	c       chan struct{}
	mu      sync.Mutex
	svids   map[string]struct{}
	secrets map[string]struct{}
	bundle  bool
}

// Subscribe starts a subscription; Close ends it.
func (m *Manager) Subscribe() *Subscription {
	s := &Subscription{m: m, c: make(chan struct{}, 1), svids: map[string]struct{}{}, secrets: map[string]struct{}{}}
	m.mu.Lock()
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	return s
}

func (m *Manager) notifyLocked(ch Change) {
	for s := range m.subs {
		s.add(ch)
	}
}

func (s *Subscription) add(ch Change) {
	s.mu.Lock()
	for _, id := range ch.SVIDs {
		s.svids[id] = struct{}{}
	}
	for _, n := range ch.Secrets {
		s.secrets[n] = struct{}{}
	}
	s.bundle = s.bundle || ch.Bundle
	s.mu.Unlock()
	select {
	case s.c <- struct{}{}:
	default:
	}
}

// C receives a value when changes are pending; Take them.
func (s *Subscription) C() <-chan struct{} { return s.c }

// Take returns and clears the pending changes (sorted names).
func (s *Subscription) Take() Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := Change{SVIDs: slices.Sorted(maps.Keys(s.svids)), Bundle: s.bundle, Secrets: slices.Sorted(maps.Keys(s.secrets))}
	clear(s.svids)
	clear(s.secrets)
	s.bundle = false
	return ch
}

// Next waits for changes and takes them.
func (s *Subscription) Next(ctx context.Context) (Change, error) {
	for {
		select {
		case <-ctx.Done():
			return Change{}, ctx.Err()
		case <-s.c:
			if ch := s.Take(); !ch.Empty() {
				return ch, nil
			}
		}
	}
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.m.mu.Lock()
	delete(s.m.subs, s)
	s.m.mu.Unlock()
}
