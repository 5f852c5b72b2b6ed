package policy

import (
	"context"
	"io"
	"time"

	"github.com/meshward/meshward/policy/internal/body"
	"github.com/meshward/meshward/policy/internal/opa"
	"github.com/meshward/meshward/policy/internal/schema"
)

// Violation is one place where a message body failed its JSON Schema:
// the value's JSON pointer, the keyword and what is wrong.
type Violation = schema.Violation

// ReasonSchemaViolation is the code of a 400 deny for a body that fails
// its JSON Schema (or an MCP tool's argument schema).
const ReasonSchemaViolation = schema.CodeViolation

// DecodeBody decodes a JSON message body the way the schema step does:
// strictly (duplicate keys or keys differing only in case, invalid UTF-8
// and trailing data are errors),
// within the default limits of authz.body. Objects are map[string]any,
// arrays []any, numbers json.Number.
func DecodeBody(s string) (any, error) { return body.DecodeString(s, body.Limits{}) }

// RegoTestOptions tune RunRegoTests.
type RegoTestOptions struct {
	// Run keeps only tests whose name matches this regular expression.
	Run string
	// Timeout per test. Default 5 s.
	Timeout time.Duration
	// V0Compatible parses modules as Rego v0.
	V0Compatible bool
}

// RunRegoTests runs the Rego unit tests (rules named test_*) in paths,
// like `opa test`, printing one line per test and a summary to w. The
// error is nil only when every test passed.
func RunRegoTests(ctx context.Context, w io.Writer, paths []string, opts RegoTestOptions) error {
	_, err := opa.RunTests(ctx, w, paths, opa.TestOptions{Run: opts.Run, Timeout: opts.Timeout, V0Compatible: opts.V0Compatible})
	return err
}
