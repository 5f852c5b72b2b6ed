package extauthz

import (
	"encoding/json"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/policy"
)

// TestBodyRowsOverGRPC runs every body row of SECURITY.md through the
// served quickstart policy (real schema step) over a gRPC connection.
func TestBodyRowsOverGRPC(t *testing.T) {
	srvCfg, pol := quickstartPolicy(t)
	srvCfg.Address = "127.0.0.1:0"
	s := newServer(t, srvCfg, newStore(t, pol, quickstartOptions(pol)), Options{})
	ac := authv3.NewAuthorizationClient(dial(t, startServer(t, s), nil))

	valid := loadRefRequest(t, "allow.json").GetAttributes().GetRequest().GetHttp().GetBody()
	withBody := func(body string, headers map[string]string) func(*authv3.CheckRequest) {
		return func(r *authv3.CheckRequest) {
			h := r.Attributes.Request.Http
			h.Body = body
			for k, v := range headers {
				if v == "" {
					delete(h.Headers, k)
				} else {
					h.Headers[k] = v
				}
			}
		}
	}
	rawBody := func(body string) func(*authv3.CheckRequest) {
		return func(r *authv3.CheckRequest) {
			h := r.Attributes.Request.Http
			h.Body, h.RawBody = "", []byte(body)
		}
	}
	asHeaderMap := func(r *authv3.CheckRequest) { headerMapReq(r) }
	deep := strings.Repeat(`{"a":`, 65) + "1" + strings.Repeat("}", 65)
	tests := []struct {
		name   string
		edit   []func(*authv3.CheckRequest)
		status int
		code   string
		msg    string // substring of the deny message
	}{
		{name: "valid body", status: 200},
		{name: "partial body", edit: []func(*authv3.CheckRequest){withBody(valid, map[string]string{"x-envoy-auth-partial-body": "true"})},
			status: 413, code: "partial_body"},
		{name: "missing content type", edit: []func(*authv3.CheckRequest){withBody(valid, map[string]string{"content-type": ""})},
			status: 415, code: "unsupported_media_type"},
		{name: "non-JSON content type", edit: []func(*authv3.CheckRequest){withBody(valid, map[string]string{"content-type": "text/plain"})},
			status: 415, code: "unsupported_media_type"},
		{name: "gzip", edit: []func(*authv3.CheckRequest){withBody(valid, map[string]string{"content-encoding": "gzip"})},
			status: 415, code: "unsupported_content_encoding"},
		{name: "zstd", edit: []func(*authv3.CheckRequest){withBody(valid, map[string]string{"content-encoding": "zstd"})},
			status: 415, code: "unsupported_content_encoding"},
		{name: "malformed JSON with position", edit: []func(*authv3.CheckRequest){withBody(`{"type":`, nil)},
			status: 400, code: "invalid_json", msg: "line 1, column 9"},
		// body is a proto string (gRPC refuses invalid UTF-8 in it): such
		// bytes arrive in raw_body.
		{name: "invalid UTF-8", edit: []func(*authv3.CheckRequest){rawBody("{\"type\":\"\xff\"}")},
			status: 400, code: "invalid_json", msg: "UTF-8"},
		{name: "duplicate keys", edit: []func(*authv3.CheckRequest){withBody(`{"role":"user","role":"admin"}`, nil)},
			status: 400, code: "invalid_json", msg: "duplicate key"},
		{name: "keys differing in case", edit: []func(*authv3.CheckRequest){withBody(`{"role":"user","Role":"admin"}`, nil)},
			status: 400, code: "invalid_json", msg: "differ only in case"},
		{name: "nesting over the default limit of 64", edit: []func(*authv3.CheckRequest){withBody(deep, nil)},
			status: 400, code: "invalid_json", msg: "limit of 64"},
		{name: "schema violation", edit: []func(*authv3.CheckRequest){withBody(strings.Replace(valid, `"priority":3`, `"priority":12`, 1), nil)},
			status: 400, code: policy.ReasonSchemaViolation, msg: "/task/priority maximum: 12 > 9"},
		{name: "valid body in raw_body", edit: []func(*authv3.CheckRequest){rawBody(valid)}, status: 200},
		{name: "invalid body in raw_body", edit: []func(*authv3.CheckRequest){rawBody(`{"role":"user","role":"admin"}`)},
			status: 400, code: "invalid_json", msg: "duplicate key"},
		{name: "valid body with header_map", edit: []func(*authv3.CheckRequest){asHeaderMap}, status: 200},
		{name: "gzip in header_map", edit: []func(*authv3.CheckRequest){withBody(valid, map[string]string{"content-encoding": "gzip"}), asHeaderMap},
			status: 415, code: "unsupported_content_encoding"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := loadRefRequest(t, "allow.json")
			for _, e := range tt.edit {
				e(req)
			}
			resp, err := ac.Check(testCtx(t), req)
			if err != nil {
				t.Fatalf("Check RPC failed: %v (a deny must be a response)", err)
			}
			if got := httpStatus(t, resp); got != tt.status {
				t.Fatalf("status %d (%s), want %d", got, resp.GetDeniedResponse().GetBody(), tt.status)
			}
			if tt.status == 200 {
				return
			}
			var b denyBody
			if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &b); err != nil {
				t.Fatal(err)
			}
			if b.Error != tt.code || !strings.Contains(b.Message, tt.msg) {
				t.Errorf("deny body %+v, want code %q and a message saying %q", b, tt.code, tt.msg)
			}
		})
	}
}
