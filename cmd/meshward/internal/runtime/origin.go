// Package runtime is serve's configuration pipeline. One Origin per
// process produces validated configuration generations: from the file
// (or the embedded quickstart), watched with its files and SIGHUP, or
// from a Source such as the Kubernetes API. It hands each generation (or
// the error building it) to every service's runner that subscribed, one
// at a time, in order; a Reporter reports every runner's reload the same
// way: counted, logged and audited.
package runtime

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"sync"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/policy"
)

// Origin is where a configuration comes from, and where its next
// generations come from: a file, the embedded quickstart, or a Source.
//
// The components of one process subscribe to it; Run watches the file
// (and the files subscribers name) and a signal, loads each new
// generation once, and hands it to every subscriber in the order they
// subscribed, one at a time: a change is logged once, and the components'
// reloads follow in order.
type Origin struct {
	path string // "" for the embedded quickstart
	src  Source // when set, generations come from it, not from path

	mu   sync.Mutex
	subs []subscriber
}

type subscriber struct {
	name  string
	files []string
	fn    func(ctx context.Context, c *config.Config, err error)
}

// Source is where generations come from when it is not a file: the
// Kubernetes API (cmd/meshward/internal/kube). Load returns the current
// generation, validated, or the error building it; Run calls changed after
// each new generation (or failure), one call at a time, until ctx ends.
type Source interface {
	Load() (*config.Config, error)
	Run(ctx context.Context, changed func(ctx context.Context)) error
}

// FileOrigin returns the Origin of the configuration file at path, or of
// the embedded quickstart when path is "".
func FileOrigin(path string) *Origin { return &Origin{path: path} }

// NewOrigin returns an Origin whose generations come from src. Its
// subscribers' files are not watched, and a signal loads nothing new:
// src reports every change.
func NewOrigin(src Source) *Origin { return &Origin{src: src} }

// Source is the Source generations come from, nil for a file.
func (o *Origin) Source() Source {
	if o == nil {
		return nil
	}
	return o.src
}

// Path is the configuration file, "" for the embedded quickstart.
func (o *Origin) Path() string {
	if o == nil {
		return ""
	}
	return o.path
}

// Subscribe registers fn for every new generation (or the error loading
// it); files are further files whose change makes a new generation
// (schemas, Rego files). It reports whether this is the first
// subscription: that subscriber runs Run in its tasks. On a nil Origin
// (a configuration that never changes) it does nothing and reports false.
func (o *Origin) Subscribe(name string, files []string, fn func(ctx context.Context, c *config.Config, err error)) (first bool) {
	if o == nil {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.subs = append(o.subs, subscriber{name: name, files: files, fn: fn})
	return len(o.subs) == 1
}

// files are the configuration file and every subscriber's files.
func (o *Origin) files() []string {
	if o.path == "" {
		return nil
	}
	out := []string{o.path}
	for _, s := range o.subs {
		for _, f := range s.files {
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return out
}

// Load loads the next generation: the file again, or the embedded
// quickstart.
func (o *Origin) Load() (*config.Config, error) {
	switch {
	case o.src != nil:
		return o.src.Load()
	case o.path == "":
		return config.Quickstart()
	default:
		return config.Load(o.path)
	}
}

// Run watches the files (debounced) and signals until ctx ends; for each
// change it loads the configuration once and calls the subscribers in
// order. Subscribe before Run: the files watched are fixed when it starts.
func (o *Origin) Run(ctx context.Context, signals <-chan os.Signal, log *slog.Logger) error {
	o.mu.Lock()
	files := o.files()
	o.mu.Unlock()
	dispatch := func(ctx context.Context) {
		c, err := o.Load()
		o.mu.Lock()
		subs := slices.Clone(o.subs)
		o.mu.Unlock()
		for _, s := range subs {
			s.fn(ctx, c, err)
		}
	}
	if o.src != nil {
		return o.src.Run(ctx, dispatch)
	}
	return policy.Watch(ctx, policy.WatchOptions{Files: files, Signals: signals, Logger: log}, dispatch)
}
