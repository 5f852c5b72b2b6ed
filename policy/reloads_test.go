package policy_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/meshward/meshward/policy"
)

// TestStoreReloads: every reload's result is kept, newest first, with the
// revision served after it and a failure's reason; only the last 20 stay.
func TestStoreReloads(t *testing.T) {
	s, err := policy.NewStore(policy.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Reloads(); len(got) != 0 {
		t.Fatalf("new store: %+v, want no reloads", got)
	}
	good := mustCompile(t, testConfig(), policy.Options{})
	_ = s.Reload(ctx(t), func() (*policy.Revision, error) { return good, nil })
	_ = s.Reload(ctx(t), func() (*policy.Revision, error) { return good, nil })
	_ = s.Reload(ctx(t), func() (*policy.Revision, error) { return nil, errors.New("bad file") })
	got := s.Reloads()
	want := []policy.ReloadResult{
		{Result: "failure", Revision: good.ID(), Error: "bad file"},
		{Result: "unchanged", Revision: good.ID()},
		{Result: "success", Revision: good.ID()},
	}
	if len(got) != len(want) {
		t.Fatalf("Reloads = %+v, want %d", got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Result != w.Result || g.Revision != w.Revision || !strings.Contains(g.Error, w.Error) || g.At.IsZero() || (w.Error == "") != (g.Error == "") {
			t.Errorf("Reloads[%d] = %+v, want %+v", i, g, w)
		}
	}
	for i := range 30 {
		_ = s.Reload(ctx(t), func() (*policy.Revision, error) { return nil, fmt.Errorf("broken %d", i) })
	}
	got = s.Reloads()
	if len(got) != 20 || !strings.Contains(got[0].Error, "broken 29") || !strings.Contains(got[19].Error, "broken 10") {
		t.Fatalf("after 33 reloads: %d kept, newest %q, oldest %q; want the last 20", len(got), got[0].Error, got[len(got)-1].Error)
	}
}
