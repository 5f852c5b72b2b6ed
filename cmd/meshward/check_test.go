package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var refload = filepath.Join("..", "..", "extauthz", "testdata", "refload")

func TestCheckCommand(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"attributes": 3}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string
		wantErr  []string
	}{
		{name: "allow.json is allowed by the schema step", args: []string{"check", "--request", filepath.Join(refload, "allow.json")},
			wantOut: []string{`"okResponse"`, "spiffe://mesh.local/ns/default/sa/planner", "create-task"}},
		{name: "deny_abac.json is denied 403", args: []string{"check", "--request", filepath.Join(refload, "deny_abac.json")},
			wantCode: 2, wantOut: []string{`"code": "Forbidden"`, "missing_role", "admin, operator"}},
		{name: "allow_get.json is allowed", args: []string{"check", "--request", filepath.Join(refload, "allow_get.json")},
			wantOut: []string{`"okResponse"`, "x-meshward-principal", "spiffe://mesh.local/ns/default/sa/viewer", "list-tasks"}},
		{name: "explicit config", args: []string{"check", "--config", quickstartPath, "--request", filepath.Join(refload, "allow_get.json")},
			wantOut: []string{`"okResponse"`}},
		{name: "explain lists every rule", args: []string{"check", "--explain", "--request", filepath.Join(refload, "deny_abac.json")},
			wantCode: 2, wantErr: []string{"create-task: matched, failed", "caller has none of the roles", "list-tasks: skipped: method POST not in GET"}},
		{name: "deny_schema.json is denied 400 with its violation", args: []string{"check", "--request", filepath.Join(refload, "deny_schema.json")},
			wantCode: 2, wantOut: []string{`"code": "BadRequest"`, "schema_violation", `\"path\":\"/task/priority\"`, `\"keyword\":\"maximum\"`, `\"message\":\"12 > 9\"`}},
		{name: "request required", args: []string{"check"}, wantCode: 1, wantErr: []string{"--request is required"}},
		{name: "missing request file", args: []string{"check", "--request", "nope.json"}, wantCode: 1, wantErr: []string{"no such file"}},
		{name: "malformed request", args: []string{"check", "--request", bad}, wantCode: 1, wantErr: []string{"bad.json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runCmd(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, tt.wantCode, errs)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout does not contain %q:\n%s", w, out)
				}
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, errs)
				}
			}
		})
	}
}

// TestCheckExplainRego: with a rego section (mode both by default), the
// reference Rego policy decides beside the rules and --explain shows it.
func TestCheckExplainRego(t *testing.T) {
	path := testConfig(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	regoDir, err := filepath.Abs(filepath.Join("..", "..", "policy", "opa", "testdata", "refload"))
	if err != nil {
		t.Fatal(err)
	}
	withRego := strings.Replace(string(orig), "\nxds:", "\n  rego:\n    files: ["+filepath.Join(regoDir, "policy.rego")+", "+filepath.Join(regoDir, "data.json")+"]\n\nxds:", 1)
	if withRego == string(orig) {
		t.Fatal("test setup: could not add a rego section")
	}
	if err := os.WriteFile(path, []byte(withRego), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file     string
		wantCode int
		wantErr  string
	}{
		{"allow.json", 0, "rego (mode both): allow"},
		{"deny_abac.json", 2, "rego (mode both): deny 403 rego_denied"},
		{"deny_schema.json", 2, "rego (mode both): deny 403 rego_denied"},
		{"allow_get.json", 0, "rego (mode both): allow"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			code, out, errs := runCmd(t, "check", "--explain", "--config", path, "--request", filepath.Join(refload, tt.file))
			if code != tt.wantCode || !strings.Contains(errs, tt.wantErr) {
				t.Errorf("exit %d, stderr:\n%s\nstdout:\n%s\nwant exit %d and %q", code, errs, out, tt.wantCode, tt.wantErr)
			}
		})
	}
	if code, _, errs := runCmd(t, "validate", "--config", path); code != 0 {
		t.Errorf("validate: exit %d: %s", code, errs)
	}
}
