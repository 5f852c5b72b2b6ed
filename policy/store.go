package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Sample is a request with a known verdict. Every new revision must decide
// every sample as expected before the store serves it.
type Sample struct {
	Name  string
	Input Input
	Allow bool
}

// StoreOptions are the optional dependencies of a Store.
type StoreOptions struct {
	// Logger, default a no-op.
	Logger *slog.Logger
	// Registry for meshward_policy_* metrics; nil registers nothing.
	Registry prometheus.Registerer
	// Samples checked against every new revision before it is served.
	Samples []Sample
}

// Store serves the current revision and swaps in new ones atomically: a
// revision that fails to build or to decide its samples is never served,
// the previous one (last known good) stays. Decisions in flight keep the
// revision they started with.
type Store struct {
	cur     atomic.Pointer[Revision]
	log     *slog.Logger
	m       *metrics
	samples []Sample
	mu      sync.Mutex // serialises reloads
	hist    reloadHistory
}

// NewStore returns an empty store: it decides deny (an internal error)
// until the first successful Reload.
func NewStore(opts StoreOptions) (*Store, error) {
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, fmt.Errorf("policy store: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{log: log, m: m, samples: opts.Samples}, nil
}

// ErrSample reports a revision that decided a sample differently than expected.
var ErrSample = errors.New("policy sample decided wrongly")

// Reload builds a revision with build, checks it against the samples and
// swaps it in. On any failure the current revision stays, the failure is
// logged and counted, and the error returned.
func (s *Store) Reload(ctx context.Context, build func() (*Revision, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rev, err := build()
	if err == nil && rev == nil {
		err = errors.New("build returned no revision")
	}
	if err == nil {
		err = s.checkSamples(ctx, rev)
	}
	old := s.cur.Load()
	if err != nil {
		s.m.reloads.WithLabelValues(reloadFailure).Inc()
		attrs := []any{"error", err}
		if old != nil {
			attrs = append(attrs, "serving", old.ID())
		}
		s.log.Error("policy reload failed; keeping the current revision", attrs...)
		s.hist.add(ReloadResult{At: time.Now(), Result: reloadFailure, Revision: s.RevisionID(), Error: err.Error()})
		return fmt.Errorf("policy reload: %w", err)
	}
	if old != nil && old.ID() == rev.ID() {
		s.m.reloads.WithLabelValues(reloadUnchanged).Inc()
		s.log.Info("policy reloaded, unchanged", "revision", rev.ID())
		s.hist.add(ReloadResult{At: time.Now(), Result: reloadUnchanged, Revision: rev.ID()})
		return nil
	}
	rev.adoptQuotas(old)
	s.cur.Store(rev)
	s.m.reloads.WithLabelValues(reloadSuccess).Inc()
	if old != nil {
		s.m.revision.DeleteLabelValues(old.ID())
	}
	s.m.revision.WithLabelValues(rev.ID()).Set(1)
	s.log.Info("policy revision loaded", "revision", rev.ID())
	s.hist.add(ReloadResult{At: time.Now(), Result: reloadSuccess, Revision: rev.ID()})
	return nil
}

func (s *Store) checkSamples(ctx context.Context, rev *Revision) error {
	var errs []error
	for _, sm := range s.samples {
		in := sm.Input
		d := rev.Decide(ctx, &in)
		if d.Err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: %w", ErrSample, sm.Name, d.Err))
		} else if d.Allow != sm.Allow {
			errs = append(errs, fmt.Errorf("%w: %s: allow=%v, want %v (%s)", ErrSample, sm.Name, d.Allow, sm.Allow, d.Reason))
		}
	}
	return errors.Join(errs...)
}

// Current is the revision being served, nil before the first load.
func (s *Store) Current() *Revision { return s.cur.Load() }

// RevisionID is the current revision's ID, "" before the first load.
func (s *Store) RevisionID() string {
	if r := s.cur.Load(); r != nil {
		return r.ID()
	}
	return ""
}

// Decide decides in with the current revision; with none loaded it denies
// with an internal error.
func (s *Store) Decide(ctx context.Context, in *Input) Decision {
	r := s.cur.Load()
	if r == nil {
		return Decision{Status: http.StatusForbidden, Code: ReasonNoRevision, Reason: ReasonNoRevision, Message: "no policy loaded", Err: ErrNoRevision}
	}
	return r.Decide(ctx, in)
}
