package config

import (
	"strings"
	"testing"
	"testing/fstest"
)

// A missing authz.jsonrpc.toolsFile is reported by field path and line,
// with the other problems, like a missing schema file.
func TestParseReportsMissingToolsFile(t *testing.T) {
	y := `trustDomain: mesh.local
authz:
  plaintext: true
  jsonrpc:
    routes: [{path: /mcp}]
    toolsFile: tools/missing.json
`
	_, err := Parse([]byte(y), fstest.MapFS{}, "test.yaml")
	want := "authz.jsonrpc.toolsFile: open tools/missing.json: file does not exist (relative names are resolved from the folder of test.yaml) (line 6)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Parse() = %v, want %q", err, want)
	}
	ok := fstest.MapFS{"tools/t.json": {Data: []byte(`{"tools":[]}`)}}
	if _, err := Parse([]byte(strings.Replace(y, "missing", "t", 1)), ok, "test.yaml"); err != nil {
		t.Fatalf("with the file: %v", err)
	}
}
