package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshward/meshward/policy"
)

func TestMCPImport(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "tools.json")
	code, _, errs := runCmd(t, "mcp", "import", "--out", out, filepath.Join("..", "..", "examples", "mcp", "tools-list.json"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	tools, err := policy.ParseTools(data)
	if err != nil || len(tools) != 3 || tools[0].Name != "create_ticket" {
		t.Fatalf("written tools %+v, %v", tools, err)
	}
	if strings.Contains(string(data), "description") {
		t.Error("descriptions were kept")
	}
	// The example's tools.json is what import writes.
	committed, err := os.ReadFile(filepath.Join("..", "..", "examples", "mcp", "tools.json"))
	if err != nil || string(committed) != string(data) {
		t.Errorf("examples/mcp/tools.json is not the import of tools-list.json (err %v)", err)
	}

	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct{ name, in, want string }{
		{"bad schema", `{"tools":[{"name":"a","inputSchema":{"type":"objekt"}}]}`, `schema "a"`},
		{"duplicate key", `{"tools":[],"tools":[]}`, "duplicate"},
		{"error response", `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}`, "JSON-RPC error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := runCmd(t, "mcp", "import", write(tc.name+".json", tc.in))
			if code != 1 || !strings.Contains(errs, tc.want) {
				t.Fatalf("exit %d, stderr %s, want 1 and %q", code, errs, tc.want)
			}
		})
	}
	if code, _, _ := runCmd(t, "mcp"); code == 0 {
		t.Error("mcp without a subcommand succeeded")
	}
	code, stdout, _ := runCmd(t, "mcp", "import", filepath.Join("..", "..", "examples", "mcp", "tools-list.json"))
	var doc struct {
		Tools []json.RawMessage `json:"tools"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &doc) != nil || len(doc.Tools) != 3 {
		t.Fatalf("to stdout: exit %d, %s", code, stdout)
	}
}

// TestMCPExample decides every request of examples/mcp as its README says.
func TestMCPExample(t *testing.T) {
	cfg := filepath.Join("..", "..", "examples", "mcp", "meshward.yaml")
	for _, tc := range []struct {
		file, verdict string
	}{
		{"allow_search.json", "verdict: allow 200 rule=planner-tools reason=allowed"},
		{"allow_viewer_search.json", "verdict: allow 200 rule=viewer-search reason=allowed"},
		{"deny_role.json", "verdict: deny 403 rule=planner-tools reason=missing_role"},
		{"deny_schema.json", "verdict: deny 400 rule=planner-tools reason=invalid_tool_arguments"},
		{"deny_unknown_tool.json", "verdict: deny 403 rule=planner-tools reason=unknown_tool"},
		{"deny_delete.json", "verdict: deny 403 rule=no-delete-index reason=denied_by_rule"},
		{"deny_malformed.json", "verdict: deny 400 rule=- reason=invalid_jsonrpc"},
		{"rate_limited.json", "verdict: deny 429 rule=planner-tools reason=rate_limited"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			code, stdout, errs := runCmd(t, "check", "--config", cfg, "--explain", "--request", filepath.Join("..", "..", "examples", "mcp", "requests", tc.file))
			want := 0
			if strings.Contains(tc.verdict, "deny") {
				want = 2
			}
			if code != want || !strings.Contains(errs, tc.verdict) {
				t.Fatalf("exit %d (want %d), stderr:\n%s", code, want, errs)
			}
			if tc.file == "rate_limited.json" && !strings.Contains(strings.Join(strings.Fields(stdout), ""), `"key":"retry-after","value":"30"`) {
				t.Errorf("no retry-after: 30 in\n%s", stdout)
			}
			if want == 2 && !strings.Contains(stdout, `\"jsonrpc\":\"2.0\"`) {
				t.Errorf("deny body is not a JSON-RPC error:\n%s", stdout)
			}
		})
	}
}

// serve reloads when the tools file changes, as for schema files.
func TestWatchedFilesIncludeToolsFile(t *testing.T) {
	path := filepath.Join("..", "..", "examples", "mcp", "meshward.yaml")
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join("..", "..", "examples", "mcp", "tools.json")
	for _, f := range watchedFiles(cfg, path) {
		if filepath.Clean(f) == want {
			return
		}
	}
	t.Fatalf("watchedFiles = %v, want %s among them", watchedFiles(cfg, path), want)
}
