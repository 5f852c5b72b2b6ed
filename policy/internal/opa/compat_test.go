package opa

import (
	"errors"
	"reflect"
	"testing"
	"testing/fstest"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	ast "github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func checkRequest(method, path string, headers map[string]string, body string) *authv3.CheckRequest {
	h := map[string]string{":method": method, ":path": path}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Principal: "spiffe://mesh.local/ns/default/sa/planner"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Host: "executor.mesh.local", Headers: h, Body: body,
		}},
	}}
}

func engineFor(t *testing.T, src string) *Engine {
	t.Helper()
	e, err := New(testContext(t), Config{Tuning: testTuning, FS: fstest.MapFS{"p.rego": {Data: []byte("package envoy.authz\n\n" + src)}}, Files: []string{"p.rego"}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestDecisions covers opa-envoy-plugin's documented decision shapes and
// their validation.
func TestDecisions(t *testing.T) {
	get := checkRequest("GET", "/v1/tasks", nil, "")
	for _, tc := range []struct {
		name   string
		policy string
		want   *Result // Decision is not compared
		err    error
	}{
		{name: "boolean allow", policy: "allow := true", want: &Result{Allowed: true}},
		{name: "boolean deny", policy: "default allow := false", want: &Result{Allowed: false}},
		{
			name:   "object with string and list headers",
			policy: `allow := {"allowed": true, "headers": {"x-a": "1", "x-b": ["2", "3"]}}`,
			want:   &Result{Allowed: true, Headers: []Header{{"x-a", "1"}, {"x-b", "2"}, {"x-b", "3"}}},
		},
		{
			name:   "headers as a list of objects",
			policy: `allow := {"allowed": true, "headers": [{"x-a": "1"}, {"x-a": "2"}]}`,
			want:   &Result{Allowed: true, Headers: []Header{{"x-a", "1"}, {"x-a", "2"}}},
		},
		{
			name:   "headers to remove and response headers",
			policy: `allow := {"allowed": true, "request_headers_to_remove": ["authorization"], "response_headers_to_add": {"x-r": "v"}}`,
			want:   &Result{Allowed: true, RequestHeadersToRemove: []string{"authorization"}, ResponseHeadersToAdd: []Header{{"x-r", "v"}}},
		},
		{
			name:   "query parameters set and remove",
			policy: `allow := {"allowed": true, "query_parameters_to_set": {"a": "1", "b": ["2", "3"]}, "query_parameters_to_remove": ["c"]}`,
			want:   &Result{Allowed: true, QueryParametersToSet: []Header{{"a", "1"}, {"b", "2"}, {"b", "3"}}, QueryParametersToRemove: []string{"c"}},
		},
		{
			name:   "custom status and body",
			policy: `allow := {"allowed": false, "http_status": 401, "body": "go away", "headers": {"www-authenticate": "Bearer"}}`,
			want:   &Result{Allowed: false, HTTPStatus: 401, Body: "go away", HasBody: true, Headers: []Header{{"www-authenticate", "Bearer"}}},
		},
		{
			name:   "deny ignores allow-only fields",
			policy: `allow := {"allowed": false, "request_headers_to_remove": 7}`,
			want:   &Result{Allowed: false},
		},
		{
			name:   "allow ignores deny-only fields",
			policy: `allow := {"allowed": true, "http_status": "x", "body": 1}`,
			want:   &Result{Allowed: true},
		},
		{
			name:   "dynamic metadata",
			policy: `allow := {"allowed": true, "dynamic_metadata": {"user": "u1", "n": 2, "l": [true]}}`,
			want: &Result{Allowed: true, DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
				"user": structpb.NewStringValue("u1"), "n": structpb.NewNumberValue(2),
				"l": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewBoolValue(true)}}),
			}}},
		},
		{name: "undefined", policy: `allow if false`, err: ErrUndefined},
		{name: "missing allowed", policy: `allow := {"headers": {"a": "b"}}`, err: ErrInvalidDecision},
		{name: "allowed not boolean", policy: `allow := {"allowed": "yes"}`, err: ErrInvalidDecision},
		{name: "decision is a string", policy: `allow := "yes"`, err: ErrInvalidDecision},
		{name: "header value is a number", policy: `allow := {"allowed": true, "headers": {"a": 1}}`, err: ErrInvalidDecision},
		{name: "header list holds a number", policy: `allow := {"allowed": true, "headers": {"a": ["x", 1]}}`, err: ErrInvalidDecision},
		{name: "headers is a string", policy: `allow := {"allowed": true, "headers": "a"}`, err: ErrInvalidDecision},
		{name: "headers to remove not strings", policy: `allow := {"allowed": true, "request_headers_to_remove": [1]}`, err: ErrInvalidDecision},
		{name: "query to set not a map", policy: `allow := {"allowed": true, "query_parameters_to_set": ["a"]}`, err: ErrInvalidDecision},
		{name: "status not a number", policy: `allow := {"allowed": false, "http_status": "401"}`, err: ErrInvalidDecision},
		{name: "status not a status", policy: `allow := {"allowed": false, "http_status": 999}`, err: ErrInvalidDecision},
		{name: "status fractional", policy: `allow := {"allowed": false, "http_status": 401.5}`, err: ErrInvalidDecision},
		{name: "body not a string", policy: `allow := {"allowed": false, "body": {"a": 1}}`, err: ErrInvalidDecision},
		{name: "dynamic metadata not an object", policy: `allow := {"allowed": true, "dynamic_metadata": [1]}`, err: ErrInvalidDecision},
		{name: "evaluation error", policy: "allow := true if input.attributes\nallow := false if input.parsed_path", err: errEval},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := engineFor(t, tc.policy)
			r, err := e.Eval(testContext(t), &Input{Check: get})
			if tc.err != nil {
				if errors.Is(tc.err, errEval) {
					if err == nil || errors.Is(err, ErrUndefined) || errors.Is(err, ErrInvalidDecision) {
						t.Fatalf("err = %v, want an evaluation error", err)
					}
					return
				}
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r.Decision = nil
			if !resultEqual(r, tc.want) {
				t.Fatalf("result\n got %+v\nwant %+v", r, tc.want)
			}
		})
	}
}

// errEval marks cases expecting a plain evaluation error.
var errEval = errors.New("eval")

func resultEqual(a, b *Result) bool {
	am, bm := a.DynamicMetadata, b.DynamicMetadata
	a2, b2 := *a, *b
	a2.DynamicMetadata, b2.DynamicMetadata = nil, nil
	return reflect.DeepEqual(a2, b2) && proto.Equal(am, bm)
}

func TestEnvoyResponses(t *testing.T) {
	r, err := decisionToResult(map[string]any{
		"allowed": true, "headers": map[string]any{"x-a": "1"},
		"request_headers_to_remove": []any{"x-b"}, "response_headers_to_add": map[string]any{"x-c": "2"},
		"query_parameters_to_set": map[string]any{"q": "3"}, "query_parameters_to_remove": []any{"r"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ok := r.OkHttpResponse()
	if len(ok.GetHeaders()) != 1 || ok.GetHeaders()[0].GetHeader().GetKey() != "x-a" ||
		ok.GetHeadersToRemove()[0] != "x-b" || ok.GetResponseHeadersToAdd()[0].GetHeader().GetValue() != "2" ||
		ok.GetQueryParametersToSet()[0].GetValue() != "3" || ok.GetQueryParametersToRemove()[0] != "r" {
		t.Fatalf("ok response: %v", ok)
	}
	if err := ok.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	if b, _ := decisionToResult(true); b.OkHttpResponse() != nil {
		t.Fatal("boolean decision has OK response parts")
	}
	for _, tc := range []struct {
		name string
		d    any
		code typev3.StatusCode
		body string
	}{
		{"boolean deny is 403", false, typev3.StatusCode_Forbidden, ""},
		{"object default 403", map[string]any{"allowed": false}, typev3.StatusCode_Forbidden, ""},
		{"custom", map[string]any{"allowed": false, "http_status": jsonNumber("429"), "body": "slow"}, typev3.StatusCode_TooManyRequests, "slow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decisionToResult(tc.d)
			if err != nil {
				t.Fatal(err)
			}
			d := r.DeniedHttpResponse()
			if d.GetStatus().GetCode() != tc.code || d.GetBody() != tc.body {
				t.Fatalf("denied response %v", d)
			}
			if err := d.ValidateAll(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestInputFields checks the parsed parts of the input document.
func TestInputFields(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        *Input
		path      string // expected JSON of input.parsed_path
		query     string
		body      string
		truncated bool
		err       error
	}{
		{
			name: "escaped segments are unescaped",
			in:   &Input{Check: checkRequest("GET", "/a%20b/%C3%A9/x%2Fy", nil, "")},
			// Like opa-envoy-plugin: url.Parse unescapes %2F before the split.
			path: `["a b", "é", "x", "y"]`, query: `{}`, body: `null`,
		},
		{
			name: "repeated query keys",
			in:   &Input{Check: checkRequest("GET", "/q?a=1&a=2&b=&c=%20x", nil, "")},
			path: `["q"]`, query: `{"a": ["1", "2"], "b": [""], "c": [" x"]}`, body: `null`,
		},
		{
			name: "root path",
			in:   &Input{Check: checkRequest("GET", "/", nil, "")},
			path: `[""]`, query: `{}`, body: `null`,
		},
		{
			name: "json body",
			in:   &Input{Check: checkRequest("POST", "/t", map[string]string{"content-type": "application/json; charset=utf-8"}, `{"a": [1, 2.5, "x"], "b": null}`)},
			path: `["t"]`, query: `{}`, body: `{"a": [1, 2.5, "x"], "b": null}`,
		},
		{
			name: "form body",
			in:   &Input{Check: checkRequest("POST", "/f", map[string]string{"content-type": "application/x-www-form-urlencoded"}, "a=1&a=2&b=x+y")},
			path: `["f"]`, query: `{}`, body: `{"a": ["1", "2"], "b": ["x y"]}`,
		},
		{
			name: "multipart body",
			in: &Input{Check: checkRequest("POST", "/m", map[string]string{"content-type": "multipart/form-data; boundary=XX"},
				"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv1\r\n--XX\r\nContent-Disposition: form-data; name=\"j\"\r\nContent-Type: application/json\r\n\r\n{\"k\":1}\r\n--XX--\r\n")},
			path: `["m"]`, query: `{}`, body: `{"a": ["v1"], "j": [{"k": 1}]}`,
		},
		{
			name: "truncated body",
			in:   &Input{Check: checkRequest("POST", "/t", map[string]string{"content-type": "application/json", "content-length": "100"}, `{"a":`)},
			path: `["t"]`, query: `{}`, body: `null`, truncated: true,
		},
		{
			name: "complete body with content-length",
			in:   &Input{Check: checkRequest("POST", "/t", map[string]string{"content-type": "application/json", "content-length": "8"}, `{"a": 1}`)},
			path: `["t"]`, query: `{}`, body: `{"a": 1}`,
		},
		{
			name: "unknown content type is not parsed",
			in:   &Input{Check: checkRequest("POST", "/t", map[string]string{"content-type": "text/plain"}, `{"a": 1}`)},
			path: `["t"]`, query: `{}`, body: `null`,
		},
		{
			name: "caller's parsed body is used",
			in: &Input{Check: checkRequest("POST", "/t", map[string]string{"content-type": "application/json"}, `{"a": 1}`),
				ParsedBody: map[string]any{"a": jsonNumber("1"), "pre": true}, HasParsedBody: true},
			path: `["t"]`, query: `{}`, body: `{"a": 1, "pre": true}`,
		},
		{
			name: "caller's parsed body is dropped when truncated",
			in: &Input{Check: checkRequest("POST", "/t", map[string]string{"content-type": "application/json", "content-length": "50"}, `{"a": 1}`),
				ParsedBody: map[string]any{"a": jsonNumber("1")}, HasParsedBody: true},
			path: `["t"]`, query: `{}`, body: `null`, truncated: true,
		},
		{name: "malformed json", in: &Input{Check: checkRequest("POST", "/t", map[string]string{"content-type": "application/json"}, `{"a":`)}, err: ErrInput},
		{name: "trailing json", in: &Input{Check: checkRequest("POST", "/t", map[string]string{"content-type": "application/json"}, `{} {}`)}, err: ErrInput},
		{name: "bad content-length", in: &Input{Check: checkRequest("POST", "/t", map[string]string{"content-type": "application/json", "content-length": "x"}, `{}`)}, err: ErrInput},
		{name: "bad form", in: &Input{Check: checkRequest("POST", "/t", map[string]string{"content-type": "application/x-www-form-urlencoded"}, "a=%zz")}, err: ErrInput},
		{name: "bad path", in: &Input{Check: checkRequest("GET", "/%zz", nil, "")}, err: ErrInput},
		{name: "no http attributes", in: &Input{Check: &authv3.CheckRequest{}}, err: ErrInput},
		{name: "nil check", in: &Input{}, err: ErrInput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := BuildInput(tc.in)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			obj := v.(ast.Object)
			for key, want := range map[string]string{
				"parsed_path": tc.path, "parsed_query": tc.query, "parsed_body": tc.body,
				"truncated_body": map[bool]string{true: "true", false: "false"}[tc.truncated],
				"version":        `{"ext_authz": "v3", "encoding": "protojson"}`,
			} {
				got := obj.Get(ast.StringTerm(key))
				if got == nil {
					t.Fatalf("input.%s missing", key)
				}
				if w := ast.MustParseTerm(want); got.Value.Compare(w.Value) != 0 {
					t.Errorf("input.%s = %v, want %v", key, got, w)
				}
			}
			if obj.Get(ast.StringTerm("meshward")) != nil {
				t.Error("input.meshward set without a Meshward")
			}
		})
	}
}

func TestMeshwardInput(t *testing.T) {
	e := engineFor(t, `allow if {
	input.meshward.principal == "spiffe://mesh.local/ns/default/sa/planner"
	"operator" in input.meshward.roles
	input.meshward.attributes.clearance == "high"
	"mfa" in input.meshward.claims.amr
	input.meshward.rule == "post-tasks"
}`)
	in := &Input{
		Check: checkRequest("GET", "/", nil, ""),
		Meshward: &Meshward{
			Principal: "spiffe://mesh.local/ns/default/sa/planner", Roles: []string{"operator"},
			Attributes: map[string]string{"clearance": "high"}, Claims: map[string]any{"amr": []any{"pwd", "mfa"}},
			Rule: "post-tasks",
		},
	}
	r, err := e.Eval(testContext(t), in)
	if err != nil || !r.Allowed {
		t.Fatalf("%+v, %v; want allow", r, err)
	}
}

// TestHeaderMapBody: with encode_raw_headers Envoy sends header_map
// instead of headers; the body is still parsed by its content type.
func TestHeaderMapBody(t *testing.T) {
	req := checkRequest("POST", "/t", nil, `{"a": 1}`)
	h := req.Attributes.Request.Http
	h.Headers = nil
	h.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "content-type", RawValue: []byte("application/json")},
		{Key: "content-length", Value: "8"},
	}}
	v, err := BuildInput(&Input{Check: req})
	if err != nil {
		t.Fatal(err)
	}
	got := v.(ast.Object).Get(ast.StringTerm("parsed_body"))
	if want := ast.MustParseTerm(`{"a": 1}`); got == nil || got.Value.Compare(want.Value) != 0 {
		t.Fatalf("parsed_body = %v", got)
	}
}
