package extauthz

import (
	"encoding/json"
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshward/meshward/policy"
)

// refloadRego is the reference workload's Rego policy (written for
// opa-envoy-plugin) and its data.
func refloadRego() (*policy.RegoConfig, fs.FS) {
	return &policy.RegoConfig{Files: []string{"policy.rego", "data.json"}}, os.DirFS("../policy/internal/opa/testdata/refload")
}

// TestRegoRefloadOverGRPC runs the reference workload through the real OPA
// step over gRPC: in mode rego the schema is checked by the Rego policy
// (json.match_schema), so deny_schema.json is a 403 there; in mode both
// the rules' schema step answers it first with 400.
func TestRegoRefloadOverGRPC(t *testing.T) {
	srvCfg, pol := quickstartPolicy(t)
	srvCfg.Address = "127.0.0.1:0"
	rego, dir := refloadRego()

	regoOnly := policy.Config{Identities: pol.Identities, Rego: rego, Mode: policy.ModeRego}
	both := pol
	both.Rego, both.Mode = rego, policy.ModeBoth
	qs := quickstartOptions(pol)
	schemaFS := qs.Dir
	for _, mode := range []struct {
		name string
		cfg  policy.Config
		opts policy.Options
		want map[string]int
	}{
		{name: "rego", cfg: regoOnly, opts: policy.Options{Dir: dir, NewRego: policy.NewOPARego},
			want: map[string]int{"allow.json": 200, "deny_abac.json": 403, "deny_schema.json": 403, "allow_get.json": 200}},
		{name: "both", cfg: both, opts: policy.Options{Dir: mergeFS{dir, schemaFS}, NewRego: policy.NewOPARego, NewBodyChecker: qs.NewBodyChecker},
			want: map[string]int{"allow.json": 200, "deny_abac.json": 403, "deny_schema.json": 400, "allow_get.json": 200}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			s := newServer(t, srvCfg, newStore(t, mode.cfg, mode.opts), Options{Registry: reg})
			ac := authv3.NewAuthorizationClient(dial(t, startServer(t, s), nil))
			for _, file := range []string{"allow.json", "deny_abac.json", "deny_schema.json", "allow_get.json"} {
				resp, err := ac.Check(testCtx(t), loadRefRequest(t, file))
				if err != nil {
					t.Fatal(err)
				}
				if got := httpStatus(t, resp); got != mode.want[file] {
					t.Errorf("%s: status %d (%s), want %d", file, got, resp.GetDeniedResponse().GetBody(), mode.want[file])
				}
			}
			if n := testutil.ToFloat64(s.m.errors.WithLabelValues(policy.ReasonEvalError)); n != 0 {
				t.Errorf("%v evaluation errors", n)
			}
		})
	}
}

// mergeFS serves names from the first FS that has them.
type mergeFS []fs.FS

func (m mergeFS) Open(name string) (fs.File, error) {
	var err error
	for _, f := range m {
		var file fs.File
		if file, err = f.Open(name); err == nil {
			return file, nil
		}
	}
	return nil, err
}

// TestRegoDecisions: the decision object's fields reach the CheckResponse;
// an undefined decision is a deny with status_on_error counted as an error.
func TestRegoDecisions(t *testing.T) {
	const head = "package envoy.authz\nimport rego.v1\n"
	tests := []struct {
		name   string
		rego   string
		path   string
		body   string
		status int
		check  func(t *testing.T, resp *authv3.CheckResponse)
	}{
		{name: "allow with mutations", path: "/v1/tasks?drop=1&keep=2", status: 200,
			rego: head + `allow := {"allowed": true,
				"headers": {"x-tenant": "t1", "x-meshward-principal": "spiffe://mesh.local/ns/default/sa/admin"},
				"request_headers_to_remove": ["x-debug", "x-meshward-roles"],
				"response_headers_to_add": {"x-served-by": "meshward"},
				"query_parameters_to_set": {"tenant": "t1"},
				"query_parameters_to_remove": ["drop"],
				"dynamic_metadata": {"tier": "gold"}}`,
			check: func(t *testing.T, resp *authv3.CheckResponse) {
				ok := resp.GetOkResponse()
				hdr := map[string]string{}
				for _, h := range ok.GetHeaders() {
					hdr[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
				}
				if hdr["x-tenant"] != "t1" || hdr["x-meshward-principal"] != spiffe("viewer") {
					t.Errorf("request headers %v: want x-tenant set and the verified principal kept", hdr)
				}
				if !contains(ok.GetHeadersToRemove(), "x-debug") || contains(ok.GetHeadersToRemove(), "x-meshward-roles") {
					t.Errorf("headers to remove %v: want x-debug, never the verified roles header", ok.GetHeadersToRemove())
				}
				if len(ok.GetResponseHeadersToAdd()) != 1 || ok.GetResponseHeadersToAdd()[0].GetHeader().GetKey() != "x-served-by" {
					t.Errorf("response headers %v", ok.GetResponseHeadersToAdd())
				}
				if q := ok.GetQueryParametersToSet(); len(q) != 1 || q[0].GetKey() != "tenant" || q[0].GetValue() != "t1" {
					t.Errorf("query parameters to set %v", q)
				}
				if q := ok.GetQueryParametersToRemove(); len(q) != 1 || q[0] != "drop" {
					t.Errorf("query parameters to remove %v", q)
				}
				if resp.GetDynamicMetadata().GetFields()["tier"].GetStringValue() != "gold" {
					t.Errorf("dynamic metadata %v", resp.GetDynamicMetadata())
				}
			}},
		{name: "deny with status, body and headers", path: "/v1/tasks", status: 429,
			rego: head + `allow := {"allowed": false, "http_status": 429, "body": "{\"teapot\":true}", "headers": {"x-why": "tea"}}`,
			check: func(t *testing.T, resp *authv3.CheckResponse) {
				dr := resp.GetDeniedResponse()
				if dr.GetBody() != `{"teapot":true}` {
					t.Errorf("body %q", dr.GetBody())
				}
				found := false
				for _, h := range dr.GetHeaders() {
					found = found || h.GetHeader().GetKey() == "x-why"
				}
				if !found {
					t.Errorf("headers %v lack x-why", dr.GetHeaders())
				}
			}},
		{name: "boolean deny", path: "/v1/tasks", status: 403, rego: head + `default allow := false`},
		{name: "input.meshward from the identity step", path: "/v1/tasks", status: 200,
			rego: head + `allow if { input.meshward.principal == "spiffe://mesh.local/ns/default/sa/viewer"; "viewer" in input.meshward.roles; input.meshward.attributes.region == "eu" }`},
		{name: "unparsable body is 400", path: "/v1/tasks", body: `{"a":`, status: 400, rego: head + `allow := true`},
	}
	srvCfg, pol := quickstartPolicy(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := policy.Config{Identities: pol.Identities, Rego: &policy.RegoConfig{Files: []string{"p.rego"}}}
			dir := fstest.MapFS{"p.rego": {Data: []byte(tt.rego)}}
			s := newServer(t, srvCfg, newStore(t, cfg, policy.Options{Dir: dir, NewRego: policy.NewOPARego}), Options{})
			req := checkReq(spiffe("viewer"), "GET", tt.path, nil)
			if tt.body != "" {
				req.Attributes.Request.Http.Body = tt.body
				req.Attributes.Request.Http.Headers["content-type"] = "application/json"
			}
			resp, _ := s.Check(testCtx(t), req)
			if got := httpStatus(t, resp); got != tt.status {
				t.Fatalf("status %d (%s), want %d", got, resp.GetDeniedResponse().GetBody(), tt.status)
			}
			if tt.check != nil {
				tt.check(t, resp)
			}
		})
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// TestRegoUndefinedIsError: an undefined decision is a deny with
// status_on_error, counted as an error and not as a deny.
func TestRegoUndefinedIsError(t *testing.T) {
	srvCfg, pol := quickstartPolicy(t)
	srvCfg.StatusOnError = 503
	cfg := policy.Config{Identities: pol.Identities, Rego: &policy.RegoConfig{Files: []string{"p.rego"}}}
	dir := fstest.MapFS{"p.rego": {Data: []byte("package envoy.authz\nimport rego.v1\nallow if input.never\n")}}
	reg := prometheus.NewRegistry()
	s := newServer(t, srvCfg, newStore(t, cfg, policy.Options{Dir: dir, NewRego: policy.NewOPARego}), Options{Registry: reg})
	resp, _ := s.Check(testCtx(t), checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil))
	if got := httpStatus(t, resp); got != 503 {
		t.Fatalf("status %d, want status_on_error 503", got)
	}
	var b denyBody
	if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &b); err != nil || strings.Contains(b.Message, "undefined") {
		t.Errorf("deny body %q leaks the cause or is not JSON (%v)", resp.GetDeniedResponse().GetBody(), err)
	}
	if n := testutil.ToFloat64(s.m.errors.WithLabelValues(policy.ReasonEvalError)); n != 1 {
		t.Errorf("errors{evaluation_error} = %v, want 1", n)
	}
	if n := testutil.ToFloat64(s.m.decisions.WithLabelValues(resultDeny, policy.ReasonEvalError)); n != 0 {
		t.Errorf("counted as a policy deny (%v)", n)
	}
}

// TestBothModesShareTheBody: with rules (and their schema step) and Rego
// both deciding, Rego's input.parsed_body is the body the schema step
// decoded, and a request Rego reads the body of is decided on it.
func TestBothModesShareTheBody(t *testing.T) {
	srvCfg, pol := quickstartPolicy(t)
	pol.Mode = policy.ModeBoth
	pol.Rego = &policy.RegoConfig{Files: []string{"p.rego"}}
	opts := quickstartOptions(pol)
	opts.NewRego = policy.NewOPARego
	files := fstest.MapFS{"p.rego": {Data: []byte("package envoy.authz\nimport rego.v1\n" +
		`default allow := false
allow if input.attributes.request.http.method == "GET"
allow if input.parsed_body.task.priority == 3`)}}
	opts.Dir = layeredFS{files, opts.Dir}
	s := newServer(t, srvCfg, newStore(t, pol, opts), Options{})
	for _, tc := range []struct {
		priority string
		status   int
	}{{"3", 200}, {"4", 403}, {"12", 400}} {
		req := loadRefRequest(t, "allow.json")
		http := req.Attributes.Request.Http
		http.Body = strings.Replace(http.Body, `"priority":3`, `"priority":`+tc.priority, 1)
		resp, _ := s.Check(testCtx(t), req)
		if got := httpStatus(t, resp); got != tc.status {
			t.Errorf("priority %s: status %d (%s), want %d", tc.priority, got, resp.GetDeniedResponse().GetBody(), tc.status)
		}
	}
}

// layeredFS reads from the first file system that has the file.
type layeredFS []fs.FS

func (l layeredFS) Open(name string) (fs.File, error) {
	var err error
	for _, f := range l {
		var file fs.File
		if file, err = f.Open(name); err == nil {
			return file, nil
		}
	}
	return nil, err
}
