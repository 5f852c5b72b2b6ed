package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/meshward/meshward/extauthz/audit"
)

const auditUsage = `Usage: meshward audit verify [--rotated] FILE...

Checks audit logs: every line is a whole JSON record and, within each
process, seq has no gap. FILEs are read as one log in the order given
(rotated files oldest first). Prints a summary; exits 1 on any problem.
`

// runAudit dispatches `meshward audit <subcommand>`.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		_, _ = io.WriteString(stderr, auditUsage) // the exit code reports the misuse
		return errUsage
	}
	if isHelp(args[0]) {
		_, err := io.WriteString(stdout, auditUsage)
		return err
	}
	switch args[0] {
	case "verify":
		return runAuditVerify(ctx, args[1:], stdout, stderr)
	default:
		_, _ = io.WriteString(stderr, auditUsage)
		return fmt.Errorf("audit: unknown subcommand %q", args[0])
	}
}

func runAuditVerify(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit verify", stderr)
	rotated := fs.Bool("rotated", false, "verify each FILE's rotated files (FILE.<time>), oldest first, before FILE")
	setUsage(fs, auditUsage+"\nFlags:\n")
	files, help, err := parseArgs(fs, args)
	if help || err != nil {
		return err
	}
	if len(files) == 0 {
		return errors.New("audit verify: a FILE is required")
	}
	var paths []string
	for _, f := range files {
		if *rotated {
			r, err := audit.RotatedFiles(f)
			if err != nil {
				return fmt.Errorf("audit verify: %w", err)
			}
			paths = append(paths, r...)
		}
		paths = append(paths, f)
	}
	s, err := audit.VerifyFiles(paths...)
	if s == nil {
		return err
	}
	if _, werr := io.WriteString(stdout, formatSummary(paths, s)); werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("audit verify: %d problem(s)", s.ProblemCount)
	}
	return nil
}

func formatSummary(paths []string, s *audit.Summary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "files:      %s\n", strings.Join(paths, " "))
	fmt.Fprintf(&b, "lines:      %d\n", s.Lines)
	fmt.Fprintf(&b, "records:    %d (%d processes)\n", s.Records, s.Processes)
	fmt.Fprintf(&b, "kinds:      %s\n", formatCounts(s.Kinds))
	fmt.Fprintf(&b, "decisions:  %s\n", formatCounts(s.Decisions))
	b.WriteString("top denied principals:\n")
	for _, c := range s.TopDenied {
		fmt.Fprintf(&b, "  %8d  %s\n", c.Count, c.Value)
	}
	b.WriteString("top deny reasons:\n")
	for _, c := range s.TopReasons {
		fmt.Fprintf(&b, "  %8d  %s\n", c.Count, c.Value)
	}
	fmt.Fprintf(&b, "problems:   %d\n", s.ProblemCount)
	for _, p := range s.Problems {
		fmt.Fprintf(&b, "  %s\n", p)
	}
	if more := s.ProblemCount - len(s.Problems); more > 0 {
		fmt.Fprintf(&b, "  ... and %d more\n", more)
	}
	return b.String()
}

func formatCounts(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
