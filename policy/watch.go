package policy

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// WatchOptions configure Watch.
type WatchOptions struct {
	// Files to watch (the configuration file, schema and Rego files).
	// Their folders are watched, so editors that replace a file by
	// renaming are seen too.
	Files []string
	// Signals triggers a reload for each value (e.g. SIGHUP); may be nil.
	Signals <-chan os.Signal
	// Debounce groups bursts of file events. Default 200ms.
	Debounce time.Duration
	// Logger, default a no-op.
	Logger *slog.Logger
}

// Watch calls reload after a watched file changes (debounced) and on every
// signal, until ctx ends. reload runs on Watch's goroutine, one at a time.
func Watch(ctx context.Context, opts WatchOptions, reload func(context.Context)) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	debounce := opts.Debounce
	if debounce <= 0 {
		debounce = 200 * time.Millisecond
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	watched := map[string]bool{}
	if len(opts.Files) > 0 {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			return fmt.Errorf("watch policy files: %w", err)
		}
		defer func() { _ = w.Close() }()
		dirs := map[string]bool{}
		for _, f := range opts.Files {
			abs, err := filepath.Abs(f)
			if err != nil {
				return fmt.Errorf("watch policy files: %w", err)
			}
			watched[abs] = true
			if d := filepath.Dir(abs); !dirs[d] {
				if err := w.Add(d); err != nil {
					return fmt.Errorf("watch policy files: %w", err)
				}
				dirs[d] = true
			}
		}
		events, errs = w.Events, w.Errors
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if abs, err := filepath.Abs(ev.Name); err == nil && watched[abs] && !ev.Has(fsnotify.Chmod) {
				timer.Reset(debounce)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			log.Warn("policy file watch error", "error", err)
		case sig := <-opts.Signals:
			log.Info("reloading policy on signal", "signal", sig.String())
			reload(ctx)
		case <-timer.C:
			log.Info("reloading policy after a file change")
			reload(ctx)
		}
	}
}
