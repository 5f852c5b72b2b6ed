package xdstest

import (
	"context"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The fake's resources are valid Envoy configuration.
func TestResourcesPassValidateAll(t *testing.T) {
	m := NewMesh("mesh.test", "a")
	for _, tc := range []struct {
		name string
		edit func()
	}{
		{"initial", func() {}},
		{"after change and rotation", func() { m.Change("a"); m.Rotate("a") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.edit()
			nr, err := m.NodeResources(context.Background(), "a")
			if err != nil {
				t.Fatal(err)
			}
			for _, group := range [][]any{toAny(nr.Listeners), toAny(nr.Clusters), toAny(nr.Routes), toAny(nr.Secrets)} {
				for _, r := range group {
					v, ok := r.(interface{ ValidateAll() error })
					if !ok {
						t.Fatalf("%T has no ValidateAll", r)
					}
					if err := v.ValidateAll(); err != nil {
						t.Errorf("%T: %v", r, err)
					}
				}
			}
		})
	}
}

func toAny[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}
