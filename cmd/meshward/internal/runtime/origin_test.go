package runtime

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
)

type generation struct {
	sub string
	cfg *config.Config
	err error
}

// TestOriginOneLoadPerChangeInOrder: a change loads the file once and
// hands that one generation to every subscriber, in subscription order;
// a subscriber's own files, a signal and a broken file count as changes.
func TestOriginOneLoadPerChangeInOrder(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "meshward.yaml")
	extra := filepath.Join(dir, "extra.json")
	const good = "trustDomain: mesh.local\nauthz:\n  plaintext: true\n"
	for p, data := range map[string]string{path: good, extra: "{}"} {
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	o := FileOrigin(path)
	if o.Path() != path {
		t.Fatalf("Origin.Path() = %q, want %q", o.Path(), path)
	}
	got := make(chan generation, 16)
	subscribe := func(name string, files []string) bool {
		return o.Subscribe(name, files, func(_ context.Context, c *config.Config, err error) { got <- generation{name, c, err} })
	}
	if !subscribe("authz", []string{extra}) {
		t.Error("first Subscribe did not report first")
	}
	if subscribe("xds", nil) {
		t.Error("second Subscribe reported first")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sig := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx, sig, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	next := func(step string) (generation, generation) {
		t.Helper()
		var gs [2]generation
		for i := range gs {
			select {
			case gs[i] = <-got:
			case <-ctx.Done():
				t.Fatalf("%s: no reload", step)
			}
		}
		if gs[0].sub != "authz" || gs[1].sub != "xds" {
			t.Errorf("%s: subscribers called as %s, %s; want authz, xds", step, gs[0].sub, gs[1].sub)
		}
		if gs[0].cfg != gs[1].cfg {
			t.Errorf("%s: subscribers got different generations: the file was loaded twice", step)
		}
		select {
		case g := <-got:
			t.Errorf("%s: a third call (%s): the change was handled twice", step, g.sub)
		case <-time.After(400 * time.Millisecond): // beyond the watcher's debounce
		}
		return gs[0], gs[1]
	}
	// Give the watcher time to start before changing files.
	time.Sleep(100 * time.Millisecond)
	if err := os.WriteFile(path, []byte(strings.Replace(good, "plaintext: true", "plaintext: true\n  reflection: true", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	a, _ := next("config file changed")
	if a.err != nil || !a.cfg.Authz.Server.Reflection {
		t.Errorf("generation after the change: err %v, reflection %v; want the new file", a.err, a.cfg != nil && a.cfg.Authz.Server.Reflection)
	}
	if err := os.WriteFile(extra, []byte(`{"x":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	next("subscriber's file changed")
	sig <- syscall.SIGHUP
	next("signal")
	if err := os.WriteFile(path, []byte("trustDomain: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, b := next("broken file")
	if a.err == nil || b.err == nil {
		t.Errorf("broken file: errors %v, %v; want both subscribers told", a.err, b.err)
	}
}

func TestOriginNilAndQuickstart(t *testing.T) {
	var o *Origin
	if o.Subscribe("x", nil, nil) || o.Path() != "" {
		t.Error("a nil Origin (a configuration that never changes) must accept no subscribers")
	}
	q := FileOrigin("")
	if q.Path() != "" {
		t.Fatalf("the quickstart's Origin has path %q", q.Path())
	}
	n, err := q.Load()
	if err != nil || n.TrustDomain != "mesh.local" || len(n.Agents) == 0 {
		t.Errorf("quickstart Origin.Load() = %v, %v; want the embedded quickstart", n, err)
	}
}
