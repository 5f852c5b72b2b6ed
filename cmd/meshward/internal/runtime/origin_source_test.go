package runtime

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
)

// fakeSource hands out the generations (or errors) of its queue, one per
// change.
type fakeSource struct {
	gens []func() (*config.Config, error)
	cur  func() (*config.Config, error)
}

func (f *fakeSource) Load() (*config.Config, error) { return f.cur() }

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
// subscriber in order.
func TestOriginFromSource(t *testing.T) {
	a := &config.Config{TrustDomain: "a"}
	b := &config.Config{TrustDomain: "b"}
	bad := errors.New("bad object")
	src := &fakeSource{
		cur:  func() (*config.Config, error) { return a, nil },
		gens: []func() (*config.Config, error){func() (*config.Config, error) { return nil, bad }, func() (*config.Config, error) { return b, nil }},
	}
	o := NewOrigin(src)
	c, err := o.Load()
	if err != nil || c != a {
		t.Fatalf("Load = %v %v, want the source's generation", c, err)
	}
	if o.Path() != "" {
		t.Errorf("Path = %q, want none", o.Path())
	}
	got := make(chan generation, 8)
	for _, name := range []string{"first", "second"} {
		o.Subscribe(name, []string{"/not/watched"}, func(_ context.Context, c *config.Config, err error) { got <- generation{name, c, err} })
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
