package opa

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	ast "github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestOptions tune [RunTests].
type TestOptions struct {
	// Run keeps only tests whose name matches this regular expression.
	Run string
	// Timeout per test. Default 5 s.
	Timeout time.Duration
	// V0Compatible parses modules as Rego v0.
	V0Compatible bool
}

// TestSummary counts test outcomes.
type TestSummary struct {
	Passed, Failed, Errored, Skipped int
}

// ErrNoTests: the paths hold no test_ rules (matching TestOptions.Run).
var ErrNoTests = errors.New("no tests found")

// RunTests runs the Rego unit tests (rules named test_*, todo_test_* are
// skipped) in paths, like `opa test`: policies, data (.json, .yaml) and
// tests are loaded together. It prints one line per test to w and a
// summary. The error is nil only when every test passed and the report
// was written.
func RunTests(ctx context.Context, w io.Writer, paths []string, opts TestOptions) (TestSummary, error) {
	var sum TestSummary
	v := ast.RegoV1
	if opts.V0Compatible {
		v = ast.RegoV0
	}
	modules, store, err := tester.LoadWithRegoVersion(paths, testFilter, v)
	if err != nil {
		return sum, fmt.Errorf("load: %w", err)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	r := tester.NewRunner().
		SetStore(store).
		SetDefaultRegoVersion(v).
		SetTimeout(timeout).
		CapturePrintOutput(true).
		EnableTracing(false).
		SetParallel(1)
	if opts.Run != "" {
		r = r.Filter(opts.Run)
	}
	ch, err := r.SetModules(modules).RunTests(ctx, nil)
	if err != nil {
		return sum, fmt.Errorf("run: %w", err)
	}
	// Every result is read even when w fails, so that the runner's
	// goroutine ends; the first write error is returned.
	var werr error
	write := func(s string) {
		if werr == nil {
			_, werr = io.WriteString(w, s)
		}
	}
	var b strings.Builder
	for res := range ch {
		b.Reset()
		loc := ""
		if res.Location != nil {
			loc = fmt.Sprintf("%s:%d: ", res.Location.File, res.Location.Row)
		}
		name := res.Package + "." + res.Name
		switch {
		case res.Skip:
			sum.Skipped++
			fmt.Fprintf(&b, "SKIP  %s%s\n", loc, name)
		case res.Error != nil:
			sum.Errored++
			fmt.Fprintf(&b, "ERROR %s%s: %v\n", loc, name, res.Error)
		case res.Fail:
			sum.Failed++
			fmt.Fprintf(&b, "FAIL  %s%s (%v)\n", loc, name, res.Duration.Round(time.Microsecond))
		default:
			sum.Passed++
			fmt.Fprintf(&b, "PASS  %s%s (%v)\n", loc, name, res.Duration.Round(time.Microsecond))
		}
		if !res.Pass() && len(res.Output) > 0 {
			for line := range strings.SplitSeq(strings.TrimRight(string(res.Output), "\n"), "\n") {
				fmt.Fprintf(&b, "      | %s\n", line)
			}
		}
		write(b.String())
	}
	total := sum.Passed + sum.Failed + sum.Errored + sum.Skipped
	b.Reset()
	b.WriteString("--------------------------------------------------------------------------------\n")
	fmt.Fprintf(&b, "PASS: %d/%d", sum.Passed, total)
	if sum.Failed > 0 {
		fmt.Fprintf(&b, "  FAIL: %d/%d", sum.Failed, total)
	}
	if sum.Errored > 0 {
		fmt.Fprintf(&b, "  ERROR: %d/%d", sum.Errored, total)
	}
	if sum.Skipped > 0 {
		fmt.Fprintf(&b, "  SKIPPED: %d/%d", sum.Skipped, total)
	}
	b.WriteString("\n")
	write(b.String())
	var testErr error
	switch {
	case total == 0:
		testErr = ErrNoTests
	case sum.Failed+sum.Errored > 0:
		testErr = fmt.Errorf("%d of %d tests failed", sum.Failed+sum.Errored, total)
	}
	if werr != nil {
		return sum, errors.Join(fmt.Errorf("write report: %w", werr), testErr)
	}
	return sum, testErr
}

// testFilter loads, inside folders, only policy and data files.
func testFilter(_ string, info fs.FileInfo, depth int) bool {
	name := info.Name()
	if info.IsDir() {
		return depth > 0 && strings.HasPrefix(name, ".")
	}
	if depth == 0 {
		return false
	}
	if strings.HasPrefix(name, ".") {
		return true
	}
	for _, ext := range []string{".rego", ".json", ".yaml", ".yml"} {
		if strings.HasSuffix(name, ext) {
			return false
		}
	}
	return true
}
