package opa

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Poller fetches an OPA bundle from an HTTP(S) URL at an interval, with
// ETag / If-None-Match: a 304 keeps the current engine; a new bundle
// replaces it only when it downloads, verifies and compiles. Run it in
// the process's task group.
type Poller struct {
	url      string
	interval time.Duration
	cfg      Config
	client   *http.Client
	logger   *slog.Logger
	metrics  *Metrics
	onUpdate func(*Engine)

	mu   sync.Mutex // serialises polls
	etag string
	cur  atomic.Pointer[Engine]
}

// PollerOption configures a Poller.
type PollerOption func(*Poller)

// WithHTTPClient sets the client (default: one with a 30 s timeout).
func WithHTTPClient(c *http.Client) PollerOption { return func(p *Poller) { p.client = c } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) PollerOption { return func(p *Poller) { p.logger = l } }

// WithMetrics counts fetches on m (default: not counted).
func WithMetrics(m *Metrics) PollerOption { return func(p *Poller) { p.metrics = m } }

// WithOnUpdate calls f with every new engine, after it is swapped in.
func WithOnUpdate(f func(*Engine)) PollerOption { return func(p *Poller) { p.onUpdate = f } }

// NewPoller returns a poller for the bundle at url, polled every interval
// (minimum 1 s). cfg.Files, if any, are compiled together with each bundle.
func NewPoller(url string, interval time.Duration, cfg Config, opts ...PollerOption) *Poller {
	p := &Poller{
		url:      url,
		interval: max(interval, time.Second),
		cfg:      cfg,
		client:   &http.Client{Timeout: 30 * time.Second},
		logger:   slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Engine returns the serving engine, nil before the first successful poll.
func (p *Poller) Engine() *Engine { return p.cur.Load() }

// Poll fetches the bundle once. updated reports a new engine swapped in;
// on error the current engine stays.
func (p *Poller) Poll(ctx context.Context) (updated bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	updated, err = p.poll(ctx)
	switch {
	case err != nil:
		p.metrics.fetch(resultError)
		p.logger.LogAttrs(ctx, slog.LevelError, "rego bundle fetch failed", slog.String(logURL, p.url), slog.Any(logError, err))
	case updated:
		p.metrics.fetch(resultUpdated)
		p.logger.LogAttrs(ctx, slog.LevelInfo, "rego bundle updated", slog.String(logURL, p.url), slog.String(logRevision, p.cur.Load().Revision()))
	default:
		p.metrics.fetch(resultNotModified)
	}
	return updated, err
}

func (p *Poller) poll(ctx context.Context) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return false, fmt.Errorf("opa: bundle request: %w", err)
	}
	if p.etag != "" && p.cur.Load() != nil {
		req.Header.Set("If-None-Match", p.etag)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return false, fmt.Errorf("opa: bundle fetch: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	switch resp.StatusCode {
	case http.StatusNotModified:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return false, nil
	case http.StatusOK:
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return false, fmt.Errorf("opa: bundle fetch: %s", resp.Status)
	}
	limit := p.cfg.MaxBundleBytes
	if limit <= 0 {
		limit = DefaultMaxBundleBytes
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return false, fmt.Errorf("opa: bundle fetch: %w", err)
	}
	if int64(len(body)) > limit {
		return false, fmt.Errorf("opa: bundle fetch: larger than %d bytes", limit)
	}
	e, err := NewFromBundle(ctx, bytes.NewReader(body), p.cfg)
	if err != nil {
		return false, err
	}
	p.cur.Store(e)
	p.etag = resp.Header.Get("ETag")
	if p.onUpdate != nil {
		p.onUpdate(e)
	}
	return true, nil
}

// Run polls at once and then every interval until ctx ends; it returns
// nil then. Failed polls are logged and counted, never fatal.
func (p *Poller) Run(ctx context.Context) error {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		if _, err := p.Poll(ctx); err != nil && errors.Is(err, context.Canceled) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
