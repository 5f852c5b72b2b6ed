package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// command is one meshward subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands lists every subcommand meshward has. Only commands that work
// are registered here.
func commands() map[string]command {
	return map[string]command{
		"check":     {"decide one CheckRequest offline, as the ext_authz server would", runCheck},
		"audit":     {"audit log tools: `audit verify FILE...` checks a log", runAudit},
		"bootstrap": {"print the Envoy bootstrap of an agent", runBootstrap},
		"serve":     {"run the ext_authz and xDS services", runServe},
		"policy":    {"policy tools: `policy test DIR` runs Rego unit tests", runPolicy},
		"validate":  {"check a configuration file and exit", runValidate},
		"version":   {"print the version", runVersion},
	}
}

// exitError carries a specific exit code (e.g. 2 for a deny in `check`).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// errUsage marks errors whose message is already printed as usage.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	c, ok := cmds[args[0]]
	if !ok {
		usage(stderr, cmds)
		return fmt.Errorf("unknown command %q", args[0])
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("meshward secures a mesh of AI agents that talk through Envoy.\n\nUsage: meshward <command> [flags]\n\nCommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-10s %s\n", n, cmds[n].summary)
	}
	b.WriteString("\nRun 'meshward <command> -h' for a command's flags.\n")
	_, _ = io.WriteString(w, b.String()) // usage goes to stderr: nothing to do if that fails
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("meshward "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args, treating -h as success and rejecting stray arguments.
func parseFlags(fs *flag.FlagSet, args []string) (help bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, errUsage
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return false, nil
}

// exitCode maps run's error to the process exit code, printing it.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.code != 2 {
			_, _ = fmt.Fprintf(stderr, "meshward: %v\n", ee.err) // the exit code still reports the failure
		}
		return ee.code
	}
	if !errors.Is(err, errUsage) {
		_, _ = fmt.Fprintf(stderr, "meshward: %v\n", err)
	}
	return 1
}
