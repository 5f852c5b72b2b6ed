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
	allow, err := os.ReadFile(filepath.Join(refload, "allow.json"))
	if err != nil {
		t.Fatal(err)
	}
	otherTD := filepath.Join(t.TempDir(), "other_td.json")
	if err := os.WriteFile(otherTD, []byte(strings.Replace(string(allow), `"principal":"spiffe://mesh.local/ns/default/sa/planner"`, `"principal":"spiffe://other.local/ns/default/sa/planner"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	noPeer := filepath.Join(t.TempDir(), "no_peer.json")
	if err := os.WriteFile(noPeer, []byte(strings.Replace(string(allow), `"principal":"spiffe://mesh.local/ns/default/sa/planner"`, `"principal":""`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string
		wantErr  []string
		wantLast string // the last line of stderr
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
		{name: "explain ends with the deny verdict", args: []string{"check", "--explain", "--request", filepath.Join(refload, "deny_schema.json")},
			wantCode: 2, wantLast: `verdict: deny 400 rule=create-task reason=schema_violation: body does not match schema "task.request": /task/priority maximum: 12 > 9`},
		{name: "explain ends with the 403 verdict", args: []string{"check", "--explain", "--request", filepath.Join(refload, "deny_abac.json")},
			wantCode: 2, wantLast: `verdict: deny 403 rule=create-task reason=missing_role: rule "create-task": caller has none of the roles admin, operator`},
		{name: "explain ends with the allow verdict", args: []string{"check", "--explain", "--request", filepath.Join(refload, "allow_get.json")},
			wantLast: "verdict: allow 200 rule=list-tasks reason=allowed"},
		{name: "explain 401 names the identity and trust domain", args: []string{"check", "--explain", "--request", otherTD},
			wantCode: 2, wantErr: []string{"rejected before policy: 401 invalid_identity"},
			wantLast: `verdict: deny 401 rule=- reason=invalid_identity identity="spiffe://other.local/ns/default/sa/planner" trustDomain="mesh.local": peer identity "spiffe://other.local/ns/default/sa/planner" is not a valid SPIFFE ID of trust domain "mesh.local"`},
		{name: "explain 401 without identity", args: []string{"check", "--explain", "--request", noPeer},
			wantCode: 2, wantLast: `verdict: deny 401 rule=- reason=missing_identity identity=(none) trustDomain="mesh.local": no verified peer identity`},
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
			if tt.wantLast != "" {
				lines := strings.Split(strings.TrimRight(errs, "\n"), "\n")
				if got := lines[len(lines)-1]; got != tt.wantLast {
					t.Errorf("last line of stderr:\n got %s\nwant %s", got, tt.wantLast)
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
	regoDir, err := filepath.Abs(filepath.Join("..", "..", "policy", "internal", "opa", "testdata", "refload"))
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
