package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/meshward/meshward/policy"
)

const policyUsage = "Usage: meshward policy test [flags] DIR...\n\nRuns the Rego unit tests (rules named test_*) in DIR with its policies and data, like `opa test`.\nFlags may come before or after the DIRs.\n\nFlags:\n"

// runPolicy dispatches `meshward policy <subcommand>`.
func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "test" {
		if len(args) > 0 && isHelp(args[0]) {
			_, err := io.WriteString(stdout, policyUsage)
			return err
		}
		_, _ = io.WriteString(stderr, policyUsage) // the exit code reports the misuse
		if len(args) > 0 {
			return fmt.Errorf("policy: unknown subcommand %q", args[0])
		}
		return errUsage
	}
	return runPolicyTest(ctx, args[1:], stdout, stderr)
}

// runPolicyTest runs Rego unit tests like `opa test`; exit code 1 when a
// test fails or errors, or when there are none.
func runPolicyTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy test", stderr)
	setUsage(fs, policyUsage)
	runRE := fs.String("run", "", "run only tests whose name matches this regular expression")
	timeout := fs.Duration("timeout", 0, "timeout per test (default 5s)")
	v0 := fs.Bool("v0-compatible", false, "parse policies as Rego v0 (OPA before 1.0)")
	dirs, help, err := parseArgs(fs, args)
	if help || err != nil {
		return err
	}
	if len(dirs) == 0 {
		_, _ = fmt.Fprint(stderr, policyUsage)
		return errors.New("policy test: a DIR is required")
	}
	var report strings.Builder
	err = policy.RunRegoTests(ctx, &report, dirs, policy.RegoTestOptions{Run: *runRE, Timeout: *timeout, V0Compatible: *v0})
	if _, werr := io.WriteString(stdout, inFileOrder(report.String())); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("policy test: %w", err)}
	}
	return nil
}

// isResultLine reports whether line starts a test result.
func isResultLine(line string) bool {
	for _, p := range []string{"PASS  ", "FAIL  ", "SKIP  ", "ERROR "} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

// inFileOrder sorts the results of a test report by file, then line
// (OPA's runner yields them in its own order); lines printed below a
// result (its output, a multi-line error) stay with it, results without a location go last, and the
// summary (from the ---- line) stays at the end.
func inFileOrder(report string) string {
	type result struct {
		file  string
		line  int
		text  string
		found bool
	}
	var results []result
	summary := ""
	rest := report
	for rest != "" {
		line, tail, _ := strings.Cut(rest, "\n")
		if strings.HasPrefix(line, "----") {
			summary = rest
			break
		}
		rest = tail
		if !isResultLine(line) && len(results) > 0 {
			results[len(results)-1].text += line + "\n"
			continue
		}
		r := result{text: line + "\n"}
		// "PASS  file:row: pkg.name (time)": status, padded to six.
		if len(line) > 6 {
			if loc, _, ok := strings.Cut(line[6:], ": "); ok {
				if i := strings.LastIndexByte(loc, ':'); i > 0 {
					if n, err := strconv.Atoi(loc[i+1:]); err == nil {
						r.file, r.line, r.found = loc[:i], n, true
					}
				}
			}
		}
		results = append(results, r)
	}
	slices.SortStableFunc(results, func(a, b result) int {
		switch {
		case a.found != b.found:
			if a.found {
				return -1
			}
			return 1
		case a.file != b.file:
			return strings.Compare(a.file, b.file)
		}
		return cmp.Compare(a.line, b.line)
	})
	var b strings.Builder
	for _, r := range results {
		b.WriteString(r.text)
	}
	b.WriteString(summary)
	return b.String()
}
