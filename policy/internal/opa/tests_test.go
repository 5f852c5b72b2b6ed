package opa

import (
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunTests(t *testing.T) {
	for _, tc := range []struct {
		name  string
		dir   string
		run   string
		want  TestSummary
		err   error // nil: success; errAny: some error
		lines []string
		// failWrite: the report's writer fails every write.
		failWrite bool
	}{
		{name: "passing", dir: "pass", want: TestSummary{Passed: 2},
			lines: []string{"PASS  ", "authz_test.rego:5: data.envoy.authz_test.test_get_allowed", "PASS: 2/2"}},
		{name: "failing", dir: "fail", want: TestSummary{Passed: 1, Failed: 1}, err: errAny,
			lines: []string{"FAIL  ", "authz_test.rego:10: data.envoy.authz_test.test_post_allowed", "FAIL: 1/2"}},
		{name: "filtered", dir: "fail", run: "get", want: TestSummary{Passed: 1}},
		{name: "no tests", dir: "pass", run: "nothing", err: ErrNoTests},
		{name: "missing dir", dir: "missing", err: errAny},
		{name: "report not written", dir: "pass", failWrite: true, want: TestSummary{Passed: 2}, err: errWrite},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			var w io.Writer = &out
			if tc.failWrite {
				w = failingWriter{}
			}
			sum, err := RunTests(testContext(t), w, []string{filepath.Join("testdata", "regotests", tc.dir)}, TestOptions{Run: tc.run})
			anyErr := errors.Is(tc.err, errAny)
			switch {
			case tc.err == nil && err != nil:
				t.Fatalf("err = %v\n%s", err, out.String())
			case anyErr && err == nil, tc.err != nil && !anyErr && !errors.Is(err, tc.err):
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if sum != tc.want {
				t.Errorf("summary %+v, want %+v", sum, tc.want)
			}
			for _, l := range tc.lines {
				if !strings.Contains(out.String(), l) {
					t.Errorf("output lacks %q:\n%s", l, out.String())
				}
			}
		})
	}
}

var (
	errAny   = errors.New("any error")
	errWrite = errors.New("write failed")
)

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errWrite }
