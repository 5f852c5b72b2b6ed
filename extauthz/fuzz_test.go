package extauthz

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/meshward/meshward/policy"
)

// fuzzSeeds are CheckRequests covering the reference workload and the
// SECURITY.md rows.
func fuzzSeeds(t testing.TB) []*authv3.CheckRequest {
	seeds := []*authv3.CheckRequest{
		loadRefRequest(t, "allow.json"), loadRefRequest(t, "allow_get.json"),
		loadRefRequest(t, "deny_abac.json"), loadRefRequest(t, "deny_schema.json"),
		checkReq(spiffe("viewer"), "GET", "/v1/tasks?x=1", nil),
		checkReq(spiffe("viewer"), "GET", "/v1/%2e%2e/tasks", nil),
		checkReq(spiffe("viewer"), "GET", "/v1//tasks", map[string]string{"x-agent-id": "a,b"}),
		checkReq(spiffe("viewer"), "TRACE", "/debug", map[string]string{"x-note": "a\r\nb"}),
		headerMapReq(checkReq(spiffe("planner"), "POST", "/v1/tasks", nil), [2]string{"x-meshward-principal", "x"}),
		checkReq("", "GET", "/v1/tasks", nil),
	}
	c := checkReq("", "GET", "/v1/mfa", nil)
	withPeer("", makeCert(t, certSpec{uris: []string{spiffe("viewer")}, ekus: clientEKU}))(c)
	withClaims(map[string]any{"amr": []any{"mfa"}})(c)
	return append(seeds, c)
}

// TestWriteFuzzCorpus regenerates testdata/fuzz/FuzzCheck when
// MESHWARD_WRITE_FUZZ_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("MESHWARD_WRITE_FUZZ_CORPUS") != "1" {
		t.Skip("set MESHWARD_WRITE_FUZZ_CORPUS=1 to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzCheck")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, r := range fuzzSeeds(t) {
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// anomalous is the fuzz oracle, written independently of canonicalize:
// a request with any of these must never be allowed.
func anomalous(r *authv3.CheckRequest) string {
	h := r.GetAttributes().GetRequest().GetHttp()
	p, _, _ := strings.Cut(h.GetPath(), "?")
	lp := strings.ToLower(p)
	for _, bad := range []string{"..", "./", "//", `\`, "#", "%2e", "%2f", "%5c", "%00", "%25"} {
		if strings.Contains(lp, bad) {
			return "path contains " + bad
		}
	}
	if strings.Contains(h.GetPath(), "#") {
		return "fragment"
	}
	if !strings.HasPrefix(p, "/") {
		return "relative path"
	}
	for _, c := range []byte(p) {
		if c < 0x20 || c == 0x7f {
			return "control character in path"
		}
	}
	check := func(k, v string) string {
		if strings.ContainsAny(k, "\x00\r\n") || strings.ContainsAny(v, "\x00\r\n") {
			return "NUL/CR/LF in header " + k
		}
		return ""
	}
	for k, v := range h.GetHeaders() {
		if s := check(k, v); s != "" {
			return s
		}
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if s := check(hv.GetKey(), hv.GetValue()+string(hv.GetRawValue())); s != "" {
			return s
		}
	}
	src := r.GetAttributes().GetSource()
	if src.GetPrincipal() == "" && src.GetCertificate() == "" {
		return "no identity"
	}
	return ""
}

// FuzzCheck: from CheckRequest bytes to a decision, nothing panics and an
// anomalous request is never allowed.
func FuzzCheck(f *testing.F) {
	for _, r := range fuzzSeeds(f) {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	s := newServer(f, plainConfig(), newStore(f, testPolicy(), policy.Options{}), Options{})
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &authv3.CheckRequest{}
		if err := proto.Unmarshal(data, req); err != nil {
			return
		}
		resp, err := s.Check(t.Context(), req)
		if err != nil || resp == nil {
			t.Fatalf("Check = %v, %v; want a response", resp, err)
		}
		if n := testutil.ToFloat64(s.m.errors.WithLabelValues(ReasonInternal)); n != 0 {
			t.Fatalf("an internal error (panic) happened on this input")
		}
		if dr := resp.GetDeniedResponse(); dr != nil {
			var b denyBody
			if err := json.Unmarshal([]byte(dr.GetBody()), &b); err != nil || b.Error == "" || b.DecisionID == "" {
				t.Fatalf("deny body %q is not the JSON contract: %v", dr.GetBody(), err)
			}
			return
		}
		if why := anomalous(req); why != "" {
			t.Fatalf("anomalous request allowed (%s): %v", why, req)
		}
		src := req.GetAttributes().GetSource()
		var principal string
		for _, h := range resp.GetOkResponse().GetHeaders() {
			if h.GetHeader().GetKey() == DefaultPrincipalHeader {
				principal = h.GetHeader().GetValue()
			}
		}
		if !strings.HasPrefix(principal, "spiffe://"+td+"/") || (src.GetPrincipal() != "" && principal != src.GetPrincipal()) {
			t.Fatalf("allowed with principal header %q for source %v", principal, src)
		}
	})
}
