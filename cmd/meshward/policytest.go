package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/meshward/meshward/policy/opa"
)

// runPolicy dispatches `meshward policy <subcommand>`.
func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "test" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			_, _ = fmt.Fprintln(stderr, "Usage: meshward policy test [flags] DIR...")
			return nil
		}
		_, _ = fmt.Fprintln(stderr, "Usage: meshward policy test [flags] DIR...")
		return errUsage
	}
	return runPolicyTest(ctx, args[1:], stdout, stderr)
}

// runPolicyTest runs Rego unit tests like `opa test`; exit code 1 when a
// test fails or errors, or when there are none.
func runPolicyTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy test", stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprintln(stderr, "Usage: meshward policy test [flags] DIR...\n\nRuns the Rego unit tests (rules named test_*) in DIR with its policies and data, like `opa test`.\n\nFlags:")
		fs.PrintDefaults()
	}
	runRE := fs.String("run", "", "run only tests whose name matches this regular expression")
	timeout := fs.Duration("timeout", 0, "timeout per test (default 5s)")
	v0 := fs.Bool("v0-compatible", false, "parse policies as Rego v0 (OPA before 1.0)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	_, err := opa.RunTests(ctx, stdout, fs.Args(), opa.TestOptions{Run: *runRE, Timeout: *timeout, V0Compatible: *v0})
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("policy test: %w", err)}
	}
	return nil
}
