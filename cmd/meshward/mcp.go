package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/meshward/meshward/policy"
)

const mcpUsage = `Usage: meshward mcp import [--out FILE] TOOLS_LIST.json

Reads the saved result of an MCP server's tools/list (the whole JSON-RPC
response, or just {"tools":[...]}), checks that every tool has a unique
name and an inputSchema that compiles, and writes {"tools":[{"name",
"inputSchema"}]} sorted by name, for authz.jsonrpc.toolsFile.
`

// runMCP dispatches the mcp subcommands.
func runMCP(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "import" {
		if len(args) > 0 && isHelp(args[0]) {
			_, err := io.WriteString(stdout, mcpUsage)
			return err
		}
		_, _ = io.WriteString(stderr, mcpUsage) // the exit code reports the misuse
		if len(args) > 0 {
			return fmt.Errorf("mcp: unknown subcommand %q", args[0])
		}
		return errUsage
	}
	return runMCPImport(ctx, args[1:], stdout, stderr)
}

// runMCPImport converts a saved tools/list into a tools file.
func runMCPImport(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("mcp import", stderr)
	setUsage(fs, mcpUsage)
	out := fs.String("out", "", "write the tools file here (default: standard output)")
	files, help, err := parseArgs(fs, args)
	if help || err != nil {
		return err
	}
	if len(files) != 1 {
		_, _ = fmt.Fprint(stderr, mcpUsage)
		return errors.New("mcp import: one TOOLS_LIST.json is required")
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		return fmt.Errorf("mcp import: %w", err)
	}
	tools, err := policy.ParseTools(data)
	if err != nil {
		return fmt.Errorf("mcp import: %s: %w", files[0], err)
	}
	if err := policy.CompileTools(tools, files[0]); err != nil {
		return fmt.Errorf("mcp import: %w", err)
	}
	type tool struct {
		Name        string         `json:"name"`
		InputSchema map[string]any `json:"inputSchema"`
	}
	doc := struct {
		Tools []tool `json:"tools"`
	}{Tools: make([]tool, 0, len(tools))}
	for _, t := range tools {
		doc.Tools = append(doc.Tools, tool{t.Name, t.InputSchema})
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("mcp import: %w", err)
	}
	b = append(b, '\n')
	if *out == "" {
		_, err = stdout.Write(b)
		return err
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil { //nolint:gosec // a tools file is configuration, not a secret
		return fmt.Errorf("mcp import: %w", err)
	}
	_, err = fmt.Fprintf(stderr, "wrote %d tools to %s\n", len(tools), *out)
	return err
}
