package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/meshward/meshward/policy/internal/opa"
)

// RegoCompileTimeout bounds loading and preparing the Rego policy of one
// revision.
const RegoCompileTimeout = 30 * time.Second

// ReasonInvalidRequest is the code of a 400 deny for a request whose path
// or body the Rego step cannot parse (as opa-envoy-plugin answers it).
const ReasonInvalidRequest = "invalid_request"

// NewOPARego is the Options.NewRego that runs cfg.Rego on OPA (package
// policy/internal/opa), with opa-envoy-plugin's input document and decision shape:
//
//	policy.Options{Dir: dir, NewRego: policy.NewOPARego}
//
// Policies are loaded and prepared once per revision, within
// RegoCompileTimeout; the revision ID covers the content of every policy,
// data, bundle and key file.
func NewOPARego(cfg *Config, dir fs.FS) (RegoEvaluator, error) {
	if cfg.Rego == nil {
		return nil, errors.New("no rego section")
	}
	if cfg.Rego.BundleURL != "" {
		return nil, errors.New("rego: a bundleURL is served from a bundle poller's engine (RegoBundle), not loaded per revision")
	}
	oc, err := cfg.Rego.opaConfig(dir)
	if err != nil {
		return nil, err
	}
	digest, err := regoDigest(cfg.Rego, dir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), RegoCompileTimeout)
	defer cancel()
	e, err := opa.New(ctx, oc)
	if err != nil {
		return nil, err
	}
	return &opaRego{e: e, digest: digest}, nil
}

// newOPARegoEngine is the Options.NewRego that serves e, an engine built
// elsewhere (the current engine of a RegoBundle fetching
// cfg.Rego.BundleURL), instead of loading cfg.Rego per revision. digest
// identifies e's content (the fetched bundle's digest) in the revision ID,
// next to the content of the other files cfg.Rego names. A nil e (no
// bundle fetched yet) is an error: there is no revision to serve.
func newOPARegoEngine(e *opa.Engine, digest string) func(cfg *Config, dir fs.FS) (RegoEvaluator, error) {
	return func(cfg *Config, dir fs.FS) (RegoEvaluator, error) {
		if e == nil {
			return nil, errors.New("rego: no bundle fetched yet")
		}
		if cfg.Rego == nil {
			return nil, errors.New("no rego section")
		}
		files, err := regoDigest(cfg.Rego, dir)
		if err != nil {
			return nil, err
		}
		return &opaRego{e: e, digest: files + " bundle " + digest}, nil
	}
}

// opaRego adapts an *opa.Engine to RegoEvaluator.
type opaRego struct {
	e      *opa.Engine
	digest string
}

// Digest makes the Rego content part of the revision ID, so that an edited
// policy file is a new revision.
func (o *opaRego) Digest() string { return o.digest }

// Eval evaluates the policy on in. A request the input cannot be built for
// is a 400 deny (not an error); every other failure is an error.
func (o *opaRego) Eval(ctx context.Context, in *Input, c Caller) (RegoResult, error) {
	parsed, hasParsed := in.ParsedBodyValue()
	oin := &opa.Input{
		Check:         in.Request,
		ParsedBody:    parsed,
		HasParsedBody: hasParsed,
		Meshward: &opa.Meshward{
			Principal: in.Principal, Roles: c.Roles, Attributes: c.Attributes, Claims: in.Claims, Rule: c.Rule,
		},
	}
	res, err := o.e.Eval(ctx, oin)
	if errors.Is(err, opa.ErrInput) {
		return RegoResult{Status: http.StatusBadRequest, Code: ReasonInvalidRequest, Message: "the request path or body cannot be parsed"}, nil
	}
	if err != nil {
		return RegoResult{}, err
	}
	return regoResult(res), nil
}

// regoResult maps OPA's decision to meshward's: allow mutations (headers,
// removals, response headers, query parameters), or the deny's status,
// body and headers; dynamic metadata either way.
func regoResult(res *opa.Result) RegoResult {
	out := RegoResult{Allow: res.Allowed}
	mu := &Mutations{}
	set := false
	if res.DynamicMetadata != nil && len(res.DynamicMetadata.GetFields()) > 0 {
		mu.DynamicMetadata, set = res.DynamicMetadata.AsMap(), true
	}
	if res.Allowed {
		for _, h := range res.Headers {
			mu.RequestHeaders = append(mu.RequestHeaders, Header{Name: h.Key, Value: h.Value})
		}
		mu.RemoveRequestHeaders = res.RequestHeadersToRemove
		for _, h := range res.ResponseHeadersToAdd {
			mu.ResponseHeaders = append(mu.ResponseHeaders, Header{Name: h.Key, Value: h.Value})
		}
		for _, q := range res.QueryParametersToSet {
			mu.QueryParametersToSet = append(mu.QueryParametersToSet, Header{Name: q.Key, Value: q.Value})
		}
		mu.QueryParametersToRemove = res.QueryParametersToRemove
		set = set || len(mu.RequestHeaders) > 0 || len(mu.RemoveRequestHeaders) > 0 || len(mu.ResponseHeaders) > 0 ||
			len(mu.QueryParametersToSet) > 0 || len(mu.QueryParametersToRemove) > 0
	} else {
		out.Status = res.HTTPStatus
		for _, h := range res.Headers {
			mu.ResponseHeaders = append(mu.ResponseHeaders, Header{Name: h.Key, Value: h.Value})
		}
		if res.HasBody {
			mu.Body, mu.HasBody = res.Body, true
		}
		set = set || len(mu.ResponseHeaders) > 0 || mu.HasBody
	}
	if set {
		out.Mutations = mu
	}
	return out
}

// regoDigest hashes every file the Rego section names (folders walked in
// lexical order), so the revision ID changes with their content.
func regoDigest(r *RegoConfig, dir fs.FS) (string, error) {
	h := sha256.New()
	names := append([]string(nil), r.Files...)
	if r.Bundle != "" {
		names = append(names, r.Bundle)
	}
	if r.Verification != nil {
		names = append(names, r.Verification.KeyFile)
	}
	for _, n := range names {
		if err := hashPath(h, dir, n); err != nil {
			return "", fmt.Errorf("rego: %w", err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashPath(h hash.Hash, dir fs.FS, name string) error {
	fsys, p := dir, filepath.ToSlash(filepath.Clean(name))
	if dir == nil || filepath.IsAbs(name) {
		abs, err := filepath.Abs(name)
		if err != nil {
			return err
		}
		fsys, p = os.DirFS(filepath.Dir(abs)), filepath.Base(abs)
	}
	return fs.WalkDir(fsys, p, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		data, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		_, _ = fmt.Fprintf(h, "%q %d\n", path, len(data))
		_, _ = h.Write(data)
		return nil
	})
}
