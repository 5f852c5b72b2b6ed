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
		"check":      {"decide one CheckRequest offline, as the ext_authz server would", runCheck},
		"audit":      {"audit log tools: `audit verify FILE...` checks a log", runAudit},
		"bootstrap":  {"print the Envoy bootstrap of an agent", runBootstrap},
		"serve":      {"run the ext_authz and xDS services", runServe},
		"quarantine": {"deny every Check from or to an agent: `quarantine --config FILE AGENT|SPIFFE-ID [--reason R]`", runQuarantine},
		"release":    {"undo a quarantine: `release --config FILE AGENT|SPIFFE-ID`", runRelease},
		"policy":     {"policy tools: `policy test DIR` runs Rego unit tests", runPolicy},
		"mcp":        {"MCP tools: `mcp import TOOLS_LIST.json` writes the tool schemas of a saved tools/list", runMCP},
		"validate":   {"check a configuration file and exit", runValidate},
		"version":    {"print the version", runVersion},
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

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) == 0 {
		usage(stderr, cmds)
		return errUsage
	}
	switch {
	case args[0] == "help" && len(args) > 1:
		// `meshward help CMD` is `meshward CMD -h`.
		if _, ok := cmds[args[1]]; ok {
			return run(ctx, []string{args[1], "-h"}, stdout, stderr)
		}
	case isHelp(args[0]):
		usage(stdout, cmds)
		return nil
	case args[0] == "--version" || args[0] == "-version":
		return runVersion(ctx, args[1:], stdout, stderr)
	}
	name := args[0]
	if name == "help" {
		name = args[1]
	}
	c, ok := cmds[name]
	if !ok {
		usage(stderr, cmds)
		return fmt.Errorf("unknown command %q", name)
	}
	// Help a command prints goes to stdout; its errors to stderr.
	return c.run(ctx, args[1:], stdout, &cliStderr{Writer: stderr, stdout: stdout})
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("meshward secures a mesh of AI agents that talk through Envoy.\n\nUsage: meshward <command> [flags] [arguments]\n\nCommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-10s %s\n", n, cmds[n].summary)
	}
	b.WriteString("\nRun 'meshward <command> -h' for a command's flags; 'meshward --version' prints the version.\nFlags may come before or after arguments; '--' ends the flags.\n")
	_, _ = io.WriteString(w, b.String()) // nothing to do if writing the usage fails
}

// cliStderr is the stderr run hands a command, carrying stdout along so
// that the command's flag set can print a requested -h to stdout while
// parse errors (and the usage after them) still go to stderr.
type cliStderr struct {
	io.Writer
	stdout io.Writer
}

// helpOutput splits a flag set's output: text written to it is an error
// (flag's failf), so the usage that follows goes to stderr; a usage with
// nothing written before it was asked for, and goes to stdout.
type helpOutput struct {
	stderr, stdout io.Writer
	wrote          bool
}

func (h *helpOutput) Write(p []byte) (int, error) {
	h.wrote = true
	return h.stderr.Write(p)
}

// newFlagSet returns a flag set that reports errors instead of exiting:
// -h prints the usage to stdout (when stderr is run's, which knows stdout);
// a parse error and the usage after it go to stderr.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("meshward "+name, flag.ContinueOnError)
	stdout := io.Discard
	if c, ok := stderr.(*cliStderr); ok {
		stdout = c.stdout
	}
	out := &helpOutput{stderr: stderr, stdout: stdout}
	fs.SetOutput(out)
	fs.Usage = func() { printUsage(fs, "", out) }
	return fs
}

// setUsage gives fs a usage text printed before its flags.
func setUsage(fs *flag.FlagSet, text string) {
	out, ok := fs.Output().(*helpOutput)
	if !ok {
		fs.Usage = func() { _, _ = io.WriteString(fs.Output(), text); fs.PrintDefaults() }
		return
	}
	fs.Usage = func() { printUsage(fs, text, out) }
}

func printUsage(fs *flag.FlagSet, text string, out *helpOutput) {
	w := out.stdout
	if out.wrote || w == io.Discard {
		w = out.stderr
	}
	if text == "" {
		text = "Usage of " + fs.Name() + ":\n"
	}
	_, _ = io.WriteString(w, text) // nothing to do if writing the usage fails
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
}

// parseArgs parses flags anywhere among args (`policy test DIR -run X`),
// returning the positional arguments in order; everything after "--" is
// positional. help is true when -h was asked for (the usage is printed).
func parseArgs(fs *flag.FlagSet, args []string) (positional []string, help bool, err error) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, true, nil
			}
			return nil, false, errUsage
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(positional, rest...), false, nil
		}
		if len(rest) == 0 {
			return positional, false, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// parseFlags parses args, treating -h as success and rejecting stray arguments.
func parseFlags(fs *flag.FlagSet, args []string) (help bool, err error) {
	pos, help, err := parseArgs(fs, args)
	if help || err != nil {
		return help, err
	}
	if len(pos) > 0 {
		return false, fmt.Errorf("unexpected argument %q", pos[0])
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
