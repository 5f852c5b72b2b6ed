package task

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func waitCtx(ctx context.Context) error { <-ctx.Done(); return nil }

func TestRun(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		tasks   []Task
		cancel  bool
		wantErr string
	}{
		{name: "first error cancels the rest", tasks: []Task{{"a", waitCtx}, {"b", func(context.Context) error { return boom }}}, wantErr: "b: boom"},
		{name: "panic becomes an error", tasks: []Task{{"a", waitCtx}, {"p", func(context.Context) error { panic("oops") }}}, wantErr: "p: panic: oops"},
		{name: "early nil return is an error", tasks: []Task{{"a", waitCtx}, {"quitter", func(context.Context) error { return nil }}}, wantErr: "quitter: stopped unexpectedly"},
		{name: "cancelled context ends cleanly", tasks: []Task{{"a", waitCtx}, {"b", waitCtx}}, cancel: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tt.cancel {
				go func() { time.Sleep(10 * time.Millisecond); cancel() }()
			}
			err := Run(ctx, tt.tasks...)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Run() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Run() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}
