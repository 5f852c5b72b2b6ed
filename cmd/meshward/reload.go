package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshward/meshward/cmd/meshward/internal/task"
)

// configReloadTask runs the configuration's one watcher (runtime.Origin):
// on a file change or SIGHUP it loads the configuration once and hands it
// to every component that subscribed, in component order. The first
// component to subscribe adds this task.
func configReloadTask(d *serveDeps) task.Task {
	return task.Task{Name: "config-reload", Run: func(ctx context.Context) error {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP)
		defer signal.Stop(sig)
		return d.origin.Run(ctx, sig, d.log)
	}}
}
