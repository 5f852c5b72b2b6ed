package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshward/meshward/policy/internal/opa"
)

// RegoBundle polls a Rego section's bundleURL. Every revision's Rego step
// (Options.NewRego = b.NewRego) serves the engine of the last bundle that
// fetched, verified and compiled, and the revision ID covers that
// bundle's content digest (with or without an ETag). Run it in the
// process's task group; Poll fetches once.
type RegoBundle struct {
	poller *opa.Poller
	rego   RegoConfig // the section the poller was started with
	body   *digestTransport
	cur    atomic.Pointer[bundleSnapshot]
}

// RegoBundleOptions are a RegoBundle's optional dependencies.
type RegoBundleOptions struct {
	// Logger logs fetches and their failures. Default: discard.
	Logger *slog.Logger
	// Registry, when set, gets meshward_rego_bundle_fetches_total.
	Registry prometheus.Registerer
	// OnUpdate, when set, runs after every new bundle, synchronously
	// within the poll (typically: recompile the revision).
	OnUpdate func()
}

// bundleSnapshot is a fetched bundle's engine and content digest, swapped
// together so that a revision never pairs one bundle's engine with
// another's digest.
type bundleSnapshot struct {
	engine *opa.Engine
	digest string
}

// NewRegoBundle returns the poller of r.BundleURL; relative file names of
// r (keys, TLS files, policy files) are read from dir.
func NewRegoBundle(r *RegoConfig, dir fs.FS, opts RegoBundleOptions) (*RegoBundle, error) {
	if r == nil || r.BundleURL == "" {
		return nil, errors.New("rego: no bundleURL to poll")
	}
	oc, err := r.opaConfig(dir)
	if err != nil {
		return nil, err
	}
	base, err := r.bundleTransport(dir)
	if err != nil {
		return nil, err
	}
	b := &RegoBundle{rego: *r, body: &digestTransport{base: base}}
	popts := []opa.PollerOption{
		opa.WithHTTPClient(&http.Client{Timeout: 30 * time.Second, Transport: b.body}),
		opa.WithOnUpdate(func(e *opa.Engine) {
			b.cur.Store(&bundleSnapshot{engine: e, digest: b.body.last()})
			if opts.OnUpdate != nil {
				opts.OnUpdate()
			}
		}),
	}
	if opts.Logger != nil {
		popts = append(popts, opa.WithLogger(opts.Logger))
	}
	if opts.Registry != nil {
		m, err := opa.NewMetrics(opts.Registry)
		if err != nil {
			return nil, err
		}
		popts = append(popts, opa.WithMetrics(m))
	}
	b.poller = opa.NewPoller(r.BundleURL, r.PollInterval, oc, popts...)
	return b, nil
}

// Poll fetches the bundle once. updated reports a new bundle swapped in
// (after OnUpdate ran); on error the current engine stays.
func (b *RegoBundle) Poll(ctx context.Context) (updated bool, err error) {
	return b.poller.Poll(ctx)
}

// Run polls at once and then every pollInterval until ctx ends. Failed
// polls are logged and counted, never fatal.
func (b *RegoBundle) Run(ctx context.Context) error { return b.poller.Run(ctx) }

// NewRego is the Options.NewRego serving the current bundle. Before the
// first successful fetch, and when cfg's Rego section is not the one the
// poller was started with (it cannot change under a running poller), it is
// an error: the revision is refused.
func (b *RegoBundle) NewRego(cfg *Config, dir fs.FS) (RegoEvaluator, error) {
	if cfg.Rego == nil || !reflect.DeepEqual(*cfg.Rego, b.rego) {
		return nil, errors.New("authz.rego changed while serving a bundleURL: restart to apply")
	}
	s := b.cur.Load()
	if s == nil {
		return nil, errors.New("rego: no bundle fetched yet")
	}
	return newOPARegoEngine(s.engine, s.digest)(cfg, dir)
}

// digestTransport hashes every successful response body, so that the
// revision ID follows the bundle's content (with or without an ETag).
type digestTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	sum  string
}

func (t *digestTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.mu.Lock()
	t.sum = ""
	t.mu.Unlock()
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	resp.Body = &hashingBody{ReadCloser: resp.Body, h: sha256.New(), t: t}
	return resp, nil
}

// last is the digest of the last body read to its end, "" if none.
func (t *digestTransport) last() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sum
}

type hashingBody struct {
	io.ReadCloser
	h hash.Hash
	t *digestTransport
}

func (b *hashingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	_, _ = b.h.Write(p[:n])
	if errors.Is(err, io.EOF) {
		b.t.mu.Lock()
		b.t.sum = hex.EncodeToString(b.h.Sum(nil))
		b.t.mu.Unlock()
	}
	return n, err
}
