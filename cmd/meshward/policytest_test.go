package main

import (
	"os"
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
		{name: "help", args: []string{"policy", "test", "-h"}, code: 0, stdout: []string{"Usage: meshward policy test", "-run"}},
		{name: "help of policy", args: []string{"policy", "-h"}, code: 0, stdout: []string{"Usage: meshward policy test"}},
		{name: "flags after the folder", args: []string{"policy", "test", filepath.Join(dir, "fail"), "-run", "get"}, code: 0,
			stdout: []string{"PASS: 1/1"}},
		{name: "after --, a flag-like name is a folder", args: []string{"policy", "test", "--", "-run"}, code: 1,
			stderr: []string{"load"}},
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

// TestPolicyTestFileLineOrder: results come in file, then line order
// whatever order the runner yields them in.
func TestPolicyTestFileLineOrder(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"b_test.rego": "package b_test\n\ntest_z if { true }\n\ntest_a if { true }\n\ntest_m if { false }\n",
		"a_test.rego": "package a_test\n\ntest_y if { true }\n\ntest_b if { true }\n",
	}
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, stderr := runCmd(t, "policy", "test", dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (test_m fails)\n%s%s", code, stdout, stderr)
	}
	var order []string
	for line := range strings.SplitSeq(stdout, "\n") {
		if i := strings.Index(line, "_test.test_"); i >= 0 {
			order = append(order, strings.Fields(line[i+len("_test."):])[0])
		}
	}
	if got, want := strings.Join(order, ","), "test_y,test_b,test_z,test_a,test_m"; got != want {
		t.Errorf("order = %s, want %s\n%s", got, want, stdout)
	}
	if !strings.HasSuffix(strings.TrimSpace(stdout), "FAIL: 1/5") {
		t.Errorf("summary is not last:\n%s", stdout)
	}
}

func TestInFileOrder(t *testing.T) {
	in := "PASS  b.rego:3: p.t1 (1µs)\n" +
		"ERROR a.rego:9: p.t2: eval error\nsecond line of the error\n" +
		"FAIL  a.rego:2: p.t3 (1µs)\n      | printed\n" +
		"PASS  p.t4 (1µs)\n" +
		"--------------------------------------------------------------------------------\nPASS: 2/4\n"
	want := "FAIL  a.rego:2: p.t3 (1µs)\n      | printed\n" +
		"ERROR a.rego:9: p.t2: eval error\nsecond line of the error\n" +
		"PASS  b.rego:3: p.t1 (1µs)\n" +
		"PASS  p.t4 (1µs)\n" +
		"--------------------------------------------------------------------------------\nPASS: 2/4\n"
	if got := inFileOrder(in); got != want {
		t.Errorf("inFileOrder:\n%s\nwant:\n%s", got, want)
	}
}
