package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIConventions: help goes to stdout with exit 0, errors to stderr
// with exit 1, --version works, and flags may follow arguments.
func TestCLIConventions(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		wantCode  int
		wantOut   []string
		wantErr   []string
		wantNoOut bool // stdout must be empty
		wantNoErr bool // stderr must be empty
	}{
		{name: "--help", args: []string{"--help"}, wantOut: []string{"Usage: meshward <command>", "serve", "validate", "version"}, wantNoErr: true},
		{name: "-h", args: []string{"-h"}, wantOut: []string{"Usage: meshward <command>"}, wantNoErr: true},
		{name: "help", args: []string{"help"}, wantOut: []string{"Usage: meshward <command>"}, wantNoErr: true},
		{name: "help CMD", args: []string{"help", "check"}, wantOut: []string{"-request", "-explain"}, wantNoErr: true},
		{name: "help unknown", args: []string{"help", "nope"}, wantCode: 1, wantErr: []string{`unknown command "nope"`}, wantNoOut: true},
		{name: "no arguments", args: nil, wantCode: 1, wantErr: []string{"Usage: meshward <command>"}, wantNoOut: true},
		{name: "--version", args: []string{"--version"}, wantOut: []string{"meshward "}, wantNoErr: true},
		{name: "version", args: []string{"version"}, wantOut: []string{"meshward "}, wantNoErr: true},
		{name: "command --help", args: []string{"validate", "--help"}, wantOut: []string{"-config", "-live"}, wantNoErr: true},
		{name: "command -h", args: []string{"bootstrap", "-h"}, wantOut: []string{"-node", "-out", "-admin-port"}, wantNoErr: true},
		{name: "unknown flag: error and usage on stderr", args: []string{"validate", "--nope"}, wantCode: 1,
			wantErr: []string{"flag provided but not defined: -nope", "-config"}, wantNoOut: true},
		{name: "flag after a stray argument still parsed", args: []string{"validate", "extra", "--config", quickstartPath}, wantCode: 1,
			wantErr: []string{`unexpected argument "extra"`}, wantNoOut: true},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 1, wantErr: []string{`unknown command "frobnicate"`}, wantNoOut: true},
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
			if tt.wantNoOut && out != "" {
				t.Errorf("stdout = %q, want nothing", out)
			}
			if tt.wantNoErr && errs != "" {
				t.Errorf("stderr = %q, want nothing", errs)
			}
		})
	}
}

// TestValidateWarnsWhatBootstrapOutRefuses: a configuration serve runs but
// `bootstrap --out` would refuse (mTLS xDS from an in-memory CA) passes
// validate with a warning naming the fix.
func TestValidateWarnsWhatBootstrapOutRefuses(t *testing.T) {
	qs, err := os.ReadFile(quickstartPath)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	schema, err := os.ReadFile(filepath.Join(filepath.Dir(quickstartPath), "schemas", "task.request.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "schemas"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "schemas", "task.request.json"), schema, 0o600); err != nil {
		t.Fatal(err)
	}
	path := quickstartPathNoInsecure(t, qs, dir)
	code, out, errs := runCmd(t, "validate", "--config", path)
	if code != 0 || !strings.Contains(out, ": ok") {
		t.Fatalf("validate: exit %d, stdout %q, stderr %q; want 0 and ok", code, out, errs)
	}
	if !strings.Contains(errs, "note: "+path+": bootstrap --out needs secrets.local.dataDir") {
		t.Errorf("stderr does not warn that bootstrap --out would refuse:\n%s", errs)
	}
	code, _, errs = runCmd(t, "validate", "--config", quickstartPath)
	if code != 0 || strings.Contains(errs, "bootstrap --out") {
		t.Errorf("quickstart (insecure xDS): exit %d, stderr %q; want no --out warning", code, errs)
	}
}
