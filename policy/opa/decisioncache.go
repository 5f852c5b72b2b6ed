package opa

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	ast "github.com/open-policy-agent/opa/v1/ast"
)

// DecisionCache configures the optional decision cache. It is safe only
// when Inputs lists every input path the policy reads (and the policy
// uses no time- or network-dependent builtins): two requests equal on
// those paths then get the same decision for TTL. Off unless configured.
type DecisionCache struct {
	// Inputs are the input paths the policy reads, e.g.
	// "attributes.source.principal", "attributes.request.http.method",
	// "parsed_path", "parsed_body" ("input." prefix optional).
	Inputs []string
	// TTL of a cached decision. Required.
	TTL time.Duration
	// MaxEntries bounds the cache; when full it is emptied. Default 10000.
	MaxEntries int
}

// DefaultDecisionCacheEntries bounds a decision cache by default.
const DefaultDecisionCacheEntries = 10000

// ParseInputPath parses a decision cache input path into a reference
// relative to input.
func ParseInputPath(p string) (ast.Ref, error) {
	p = strings.TrimPrefix(strings.TrimSpace(p), "input.")
	if p == "" || p == "input" {
		return nil, errors.New("empty input path")
	}
	ref, err := ast.ParseRef("input." + p)
	if err != nil {
		return nil, fmt.Errorf("input path %q: %w", p, err)
	}
	for _, t := range ref[1:] {
		if !t.IsGround() {
			return nil, fmt.Errorf("input path %q: only constant segments", p)
		}
	}
	return ref[1:], nil
}

type decisionCache struct {
	paths []ast.Ref
	ttl   time.Duration
	max   int
	now   func() time.Time

	mu      sync.Mutex
	entries map[string]cacheEntry
}

type cacheEntry struct {
	res     *Result
	expires time.Time
}

func newDecisionCache(c *DecisionCache) (*decisionCache, error) {
	if len(c.Inputs) == 0 {
		return nil, errors.New("decision cache: no input paths")
	}
	if c.TTL <= 0 {
		return nil, errors.New("decision cache: ttl must be positive")
	}
	dc := &decisionCache{ttl: c.TTL, max: c.MaxEntries, now: time.Now, entries: map[string]cacheEntry{}}
	if dc.max <= 0 {
		dc.max = DefaultDecisionCacheEntries
	}
	for _, p := range c.Inputs {
		ref, err := ParseInputPath(p)
		if err != nil {
			return nil, fmt.Errorf("decision cache: %w", err)
		}
		dc.paths = append(dc.paths, ref)
	}
	return dc, nil
}

// key is the canonical text of the declared paths' values (objects print
// with sorted keys, strings quoted); an absent path prints as "-".
func (dc *decisionCache) key(input ast.Value) string {
	obj, ok := input.(ast.Object)
	if !ok {
		return ""
	}
	var b []byte
	for _, p := range dc.paths {
		v, err := obj.Find(p)
		if err != nil {
			b = append(b, '-')
		} else {
			b = append(b, v.String()...)
		}
		b = append(b, 0)
	}
	return string(b)
}

func (dc *decisionCache) get(key string) (*Result, bool) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	e, ok := dc.entries[key]
	if !ok {
		return nil, false
	}
	if !dc.now().Before(e.expires) {
		delete(dc.entries, key)
		return nil, false
	}
	return e.res, true
}

func (dc *decisionCache) put(key string, r *Result) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if len(dc.entries) >= dc.max {
		clear(dc.entries)
	}
	dc.entries[key] = cacheEntry{res: r, expires: dc.now().Add(dc.ttl)}
}
