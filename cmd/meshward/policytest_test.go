package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestPolicyTest(t *testing.T) {
	dir := filepath.Join("testdata", "policytest")
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{name: "passing", args: []string{"policy", "test", filepath.Join(dir, "pass")}, code: 0,
			stdout: []string{"PASS  ", "test_get_allowed", "test_post_denied", "PASS: 2/2"}},
		{name: "failing", args: []string{"policy", "test", filepath.Join(dir, "fail")}, code: 1,
			stdout: []string{"PASS  ", "FAIL  ", "test_post_allowed", "FAIL: 1/2"}, stderr: []string{"1 of 2 tests failed"}},
		{name: "filter", args: []string{"policy", "test", "-run", "get", filepath.Join(dir, "fail")}, code: 0,
			stdout: []string{"PASS: 1/1"}},
		{name: "example policy", args: []string{"policy", "test", filepath.Join("..", "..", "examples", "rego")}, code: 0,
			stdout: []string{"PASS: 6/6"}},
		{name: "no tests", args: []string{"policy", "test", "-run", "nothing", filepath.Join(dir, "pass")}, code: 1,
			stderr: []string{"no tests found"}},
		{name: "missing dir", args: []string{"policy", "test", filepath.Join(dir, "missing")}, code: 1,
			stderr: []string{"load"}},
		{name: "no dir", args: []string{"policy", "test"}, code: 1, stderr: []string{"Usage: meshward policy test"}},
		{name: "no subcommand", args: []string{"policy"}, code: 1, stderr: []string{"Usage: meshward policy test"}},
		{name: "unknown subcommand", args: []string{"policy", "lint"}, code: 1, stderr: []string{"Usage: meshward policy test"}},
		{name: "help", args: []string{"policy", "test", "-h"}, code: 0, stderr: []string{"-run"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			for _, s := range tc.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
		})
	}
}
