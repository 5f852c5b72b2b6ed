package opa

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzBuildInput: no input panics, every failure is ErrInput, and for
// JSON bodies the document equals opa-envoy-plugin's protojson route.
func FuzzBuildInput(f *testing.F) {
	f.Add("/v1/tasks", "application/json", `{"type":"task.request","task":{"priority":3}}`, "")
	f.Add("/a%2Fb/%zz?x=1&x=2", "application/json", `{"a":`, "5")
	f.Add("/f?q", "application/x-www-form-urlencoded", "a=1&a=%zz", "")
	f.Add("/m", "multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--b--\r\n", "")
	f.Add("//x/../y#frag", "application/json", `[1e400, -0, 1.0]`, "-1")
	f.Add("/d", "application/json", `{"a":1,"a":2,"A":"\ud800","b":"\u00e9"}`, "")
	f.Add("/d", "application/json", " {\"deep\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}\n", "")
	f.Fuzz(func(t *testing.T, path, ct, body, cl string) {
		if !utf8.ValidString(path) || !utf8.ValidString(ct) || !utf8.ValidString(body) || !utf8.ValidString(cl) {
			return // proto3 strings arriving over gRPC are valid UTF-8
		}
		h := map[string]string{"content-type": ct}
		if cl != "" {
			h["content-length"] = cl
		}
		req := checkRequest("POST", path, h, body)
		fast, err := BuildInput(&Input{Check: req})
		if err != nil {
			if !errors.Is(err, ErrInput) {
				t.Fatalf("error not ErrInput: %v", err)
			}
			return
		}
		if !strings.Contains(ct, "application/json") {
			return
		}
		slow, err := naiveInput(req)
		if err != nil {
			t.Fatalf("fast build succeeded, naive failed: %v", err)
		}
		if a, b := canonicalJSON(t, fast), canonicalJSON(t, slow); a != b {
			t.Fatalf("inputs differ\nfast  %s\nnaive %s", a, b)
		}
	})
}
