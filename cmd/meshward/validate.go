package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
)

func runValidate(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("validate", stderr)
	path := fs.String("config", "", "configuration file to check (required)")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if *path == "" {
		return errors.New("validate: --config is required")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if err := compileAll(cfg); err != nil {
		return fmt.Errorf("%s: %w", *path, err)
	}
	_, err = fmt.Fprintf(stdout, "%s: ok\n", *path)
	return err
}

// compileAll builds everything a configuration describes without serving
// it, so that `validate` catches what `serve` would refuse.
func compileAll(cfg *config.Config) error {
	if _, err := compilePolicy(cfg); err != nil {
		return err
	}
	return nil
}
