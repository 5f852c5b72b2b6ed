package opa

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ast "github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/rest"
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
	dl   *download.Downloader
	etag string // of the bundle being served
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

// poll fetches the bundle once with OPA's bundle downloader
// (download.Downloader, in manual trigger mode): it sends If-None-Match
// with the ETag of the bundle being served, reads the tarball with the
// size limit and verifies its signature with cfg.Verification, like an
// OPA agent; this package then prepares the engine. The schedule is the
// Poller's own (Run), so that Poll and Run share one ETag.
func (p *Poller) poll(ctx context.Context) (bool, error) {
	if p.dl == nil {
		dl, err := p.downloader()
		if err != nil {
			return false, err
		}
		p.dl = dl
	}
	var e *Engine
	var etag string
	p.dl.WithCallback(func(ctx context.Context, u download.Update) error {
		if u.Error != nil {
			return nil //nolint:nilerr // Trigger returns u.Error itself; returning it here would join it twice
		}
		if u.Bundle == nil {
			return nil // 304 Not Modified
		}
		if u.Bundle.Type() == bundle.DeltaBundleType {
			return errors.New("opa: bundle fetch: a delta bundle; serve snapshot bundles")
		}
		var err error
		e, err = build(ctx, p.cfg, u.Bundle)
		etag = u.ETag
		return err
	})
	if err := p.dl.Trigger(ctx); err != nil {
		// A bundle that fetched but did not compile must not become the
		// cached ETag: the next poll fetches it again.
		p.dl.SetCache(p.etag)
		var he download.HTTPError
		if errors.As(err, &he) {
			return false, fmt.Errorf("opa: bundle fetch: %d %s", he.StatusCode, http.StatusText(he.StatusCode))
		}
		return false, fmt.Errorf("opa: bundle fetch: %w", err)
	}
	if e == nil {
		return false, nil // not modified
	}
	p.cur.Store(e)
	p.etag = etag
	if p.onUpdate != nil {
		p.onUpdate(e)
	}
	return true, nil
}

// downloader builds the OPA downloader of p.url, fetching with p.client
// (its TLS settings and transport) through a REST client credentials
// plugin.
func (p *Poller) downloader() (*download.Downloader, error) {
	u, err := url.Parse(p.url)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("opa: bundle URL %q: not an absolute URL", p.url)
	}
	path := strings.TrimPrefix(u.EscapedPath(), "/")
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	svc, err := json.Marshal(map[string]any{
		"name": "bundle", "url": u.Scheme + "://" + u.Host,
		"credentials": map[string]any{"plugin": clientPlugin},
	})
	if err != nil {
		return nil, err
	}
	limit := p.cfg.MaxBundleBytes
	if limit <= 0 {
		limit = DefaultMaxBundleBytes
	}
	hc := *p.client
	hc.Transport = limitTransport{base: orDefaultTransport(hc.Transport), limit: limit}
	rc, err := rest.New(svc, nil, rest.Logger(logging.NewNoOpLogger()),
		rest.AuthPluginLookup(func(name string) rest.HTTPAuthPlugin {
			if name != clientPlugin {
				return nil
			}
			return httpClientPlugin{&hc}
		}))
	if err != nil {
		return nil, fmt.Errorf("opa: bundle client: %w", err)
	}
	trigger := plugins.TriggerManual
	dc := download.Config{Trigger: &trigger}
	if err := dc.ValidateAndInjectDefaults(); err != nil {
		return nil, fmt.Errorf("opa: bundle downloader: %w", err)
	}
	dl := download.New(dc, rc, path).
		WithSizeLimitBytes(limit).
		WithBundleParserOpts(ast.ParserOptions{RegoVersion: regoVersion(p.cfg), ProcessAnnotation: true})
	if v := p.cfg.Verification; v != nil {
		vc, err := verificationConfig(v)
		if err != nil {
			return nil, err
		}
		dl = dl.WithBundleVerificationConfig(vc)
	}
	dl.SetCache("")
	return dl, nil
}

// clientPlugin names the REST credentials plugin that hands the
// downloader the Poller's HTTP client.
const clientPlugin = "meshward-http-client"

// httpClientPlugin is a rest.HTTPAuthPlugin that returns a given client
// and adds nothing to requests (TLS client certificates, if any, are in
// the client's transport).
type httpClientPlugin struct{ c *http.Client }

func (h httpClientPlugin) NewClient(rest.Config) (*http.Client, error) { return h.c, nil }
func (httpClientPlugin) Prepare(*http.Request) error                   { return nil }

func orDefaultTransport(t http.RoundTripper) http.RoundTripper {
	if t == nil {
		return http.DefaultTransport
	}
	return t
}

// limitTransport bounds what is read of a response body to limit+1
// bytes (the downloader drains a body it stopped reading).
type limitTransport struct {
	base  http.RoundTripper
	limit int64
}

func (t limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	resp.Body = limitedBody{Reader: io.LimitReader(resp.Body, t.limit+1), c: resp.Body}
	return resp, nil
}

type limitedBody struct {
	io.Reader
	c io.Closer
}

func (b limitedBody) Close() error { return b.c.Close() }

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
