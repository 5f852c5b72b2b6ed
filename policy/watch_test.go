package policy_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/meshward/meshward/policy"
)

func TestWatch(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "meshward.yaml")
	if err := os.WriteFile(file, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sig := make(chan os.Signal, 1)
	reloads := make(chan struct{}, 10)
	done := make(chan error, 1)
	go func() {
		done <- policy.Watch(ctx, policy.WatchOptions{Files: []string{file}, Signals: sig, Debounce: 20 * time.Millisecond},
			func(context.Context) { reloads <- struct{}{} })
	}()
	wait := func(what string) {
		t.Helper()
		select {
		case <-reloads:
		case <-ctx.Done():
			t.Fatalf("no reload after %s", what)
		}
	}
	sig <- syscall.SIGHUP
	wait("SIGHUP")
	// The watch may not be installed the instant Watch starts: retry the
	// write until a reload is seen.
	for i := 0; ; i++ {
		if err := os.WriteFile(file, []byte("b"), 0o600); err != nil {
			t.Fatal(err)
		}
		select {
		case <-reloads:
		case <-time.After(500 * time.Millisecond):
			if ctx.Err() != nil {
				t.Fatal("no reload after writing the file")
			}
			continue
		}
		break
	}
	// Rename over the file, as editors do.
	tmp := filepath.Join(dir, "meshward.yaml.tmp")
	if err := os.WriteFile(tmp, []byte("c"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	wait("rename over the file")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch = %v", err)
	}
}
