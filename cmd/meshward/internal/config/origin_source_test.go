package config

import (
	"context"
	"errors"
	"testing"
	"time"
)

// fakeSource hands out the generations (or errors) of its queue, one per
// change.
type fakeSource struct {
	gens []func() (*Config, error)
	cur  func() (*Config, error)
}

func (f *fakeSource) Load() (*Config, error) { return f.cur() }

func (f *fakeSource) Run(ctx context.Context, changed func(context.Context)) error {
	for _, g := range f.gens {
		f.cur = g
		changed(ctx)
	}
	<-ctx.Done()
	return nil
}

// TestOriginFromSource: an Origin made with NewOrigin loads from its
// source, not a file, and hands each change, error included, to every
// subscriber in order, each generation carrying the Origin.
func TestOriginFromSource(t *testing.T) {
	a := &Config{TrustDomain: "a"}
	b := &Config{TrustDomain: "b"}
	bad := errors.New("bad object")
	src := &fakeSource{
		cur:  func() (*Config, error) { return a, nil },
		gens: []func() (*Config, error){func() (*Config, error) { return nil, bad }, func() (*Config, error) { return b, nil }},
	}
	o := NewOrigin(src)
	c, err := o.Load()
	if err != nil || c != a || c.Origin != o {
		t.Fatalf("Load = %v %v, want the source's generation carrying the Origin", c, err)
	}
	if o.Path() != "" {
		t.Errorf("Path = %q, want none", o.Path())
	}
	got := make(chan generation, 8)
	for _, name := range []string{"first", "second"} {
		o.Subscribe(name, []string{"/not/watched"}, func(_ context.Context, c *Config, err error) { got <- generation{name, c, err} })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx, nil, nil) }()
	want := []struct {
		sub string
		td  string
		err error
	}{{"first", "", bad}, {"second", "", bad}, {"first", "b", nil}, {"second", "b", nil}}
	for _, w := range want {
		select {
		case g := <-got:
			td := ""
			if g.cfg != nil {
				td = g.cfg.TrustDomain
			}
			if g.sub != w.sub || td != w.td || !errors.Is(g.err, w.err) {
				t.Errorf("got %s %q %v, want %s %q %v", g.sub, td, g.err, w.sub, w.td, w.err)
			}
		case <-ctx.Done():
			t.Fatal("generations not delivered")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}
