// Package task runs meshward's long-running parts as one group: the first
// to end (error, or nil while others still run) cancels the rest, and a
// panic in any becomes an error instead of killing the process unannounced.
package task

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
)

// Task is a long-running part: it runs until ctx is done or it fails.
type Task struct {
	Name string
	Run  func(ctx context.Context) error
}

// Run starts every task and waits for all to return. The first task to
// return cancels the others; Run returns the first non-nil error, or nil
// when the tasks ended because ctx was cancelled.
func Run(ctx context.Context, tasks ...Task) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for _, t := range tasks {
		wg.Go(func() {
			err := runSafe(ctx, t)
			if err == nil && ctx.Err() == nil {
				err = fmt.Errorf("%s: stopped unexpectedly", t.Name)
			}
			if err != nil && ctx.Err() == nil {
				once.Do(func() { firstErr = err })
			}
			cancel()
		})
	}
	wg.Wait()
	return firstErr
}

func runSafe(ctx context.Context, t Task) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: panic: %v\n%s", t.Name, r, debug.Stack())
		}
	}()
	if err := t.Run(ctx); err != nil {
		return fmt.Errorf("%s: %w", t.Name, err)
	}
	return nil
}
