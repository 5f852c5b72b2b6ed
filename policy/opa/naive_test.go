package opa

import (
	"bytes"
	"encoding/json"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	ast "github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"
)

// naiveInput builds the input document the way opa-envoy-plugin does:
// protojson -> JSON -> map -> added fields -> ast.InterfaceToValue. It is
// the reference the fast builder is checked against, and the baseline of
// BenchmarkEval.
func naiveInput(req *authv3.CheckRequest) (ast.Value, error) {
	bs, err := protojson.Marshal(req)
	if err != nil {
		return nil, err
	}
	var input map[string]any
	if err := util.UnmarshalJSON(bs, &input); err != nil {
		return nil, err
	}
	input["version"] = map[string]string{"ext_authz": "v3", "encoding": "protojson"}
	h := req.GetAttributes().GetRequest().GetHttp()
	u, err := url.Parse(h.GetPath())
	if err != nil {
		return nil, err
	}
	segs := strings.Split(strings.TrimLeft(u.Path, "/"), "/")
	pp := make([]any, len(segs))
	for i, s := range segs {
		pp[i] = s
	}
	input["parsed_path"] = pp
	pq := map[string]any{}
	for k, vs := range u.Query() {
		l := make([]any, len(vs))
		for i, v := range vs {
			l[i] = v
		}
		pq[k] = l
	}
	input["parsed_query"] = pq
	var body any
	truncated := false
	if ct := h.GetHeaders()["content-type"]; strings.Contains(ct, "application/json") && h.GetBody() != "" {
		if cl, ok := h.GetHeaders()["content-length"]; ok {
			n, err := strconv.ParseInt(cl, 10, 64)
			if err != nil {
				return nil, err
			}
			truncated = n != -1 && n > int64(len(h.GetBody()))
		}
		if !truncated {
			if err := util.UnmarshalJSON([]byte(h.GetBody()), &body); err != nil {
				return nil, err
			}
		}
	}
	input["parsed_body"] = body
	input["truncated_body"] = truncated
	return ast.InterfaceToValue(input)
}

// richRequest sets every kind of field a CheckRequest carries: 64-bit
// integers, bytes, timestamps, Struct metadata with odd numbers, Any,
// header_map with raw values, labels, TLS session.
const richRequest = `{"attributes": {
  "source": {"address": {"socketAddress": {"address": "10.0.0.7", "portValue": 41234}}, "principal": "spiffe://mesh.local/ns/default/sa/planner",
    "certificate": "-----BEGIN%20CERTIFICATE-----", "labels": {"app": "planner"}, "service": "planner"},
  "destination": {"address": {"pipe": {"path": "/tmp/s", "mode": 420}}, "principal": "spiffe://mesh.local/ns/default/sa/executor"},
  "request": {"time": "2026-11-25T17:22:33.120Z", "http": {"id": "1234", "method": "POST", "path": "/v1/tasks/%C3%A9?x=1&x=2",
    "host": "executor.mesh.local", "scheme": "https", "protocol": "HTTP/2", "size": "123456789012", "fragment": "f", "query": "x=1&x=2",
    "headers": {"content-type": "application/json", ":path": "/v1/tasks"}, "body": "{\"n\": 1.50, \"big\": 12345678901234567890, \"s\": \"\\u00e9\"}",
    "rawBody": "AAEC/w==",
    "headerMap": {"headers": [{"key": "x-bin", "rawValue": "AP8="}, {"key": "x-a", "value": "b"}]}}},
  "contextExtensions": {"k": "v"},
  "metadataContext": {"filterMetadata": {"envoy.filters.http.jwt_authn": {"payload": {"sub": "u", "exp": 1700000000, "f": 1e-7, "g": 1e21, "h": 0.1, "neg": -0, "n": null, "b": true, "l": [1, "a", {"x": []}]}}},
    "typedFilterMetadata": {"t": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"a": 1}}}},
  "routeMetadataContext": {},
  "tlsSession": {"sni": "executor.mesh.local"}
}}`

func canonicalJSON(t *testing.T, v ast.Value) string {
	t.Helper()
	x, err := ast.JSON(v)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(x); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestInputMatchesPlugin: the fast builder gives byte for byte the
// document opa-envoy-plugin's protojson round trip gives.
func TestInputMatchesPlugin(t *testing.T) {
	reqs := map[string]*authv3.CheckRequest{}
	for _, f := range []string{"allow.json", "deny_abac.json", "deny_schema.json", "allow_get.json"} {
		reqs[f] = loadCheck(t, filepath.Join("testdata", "refload", f))
	}
	var rich authv3.CheckRequest
	if err := protojson.Unmarshal([]byte(richRequest), &rich); err != nil {
		t.Fatal(err)
	}
	reqs["rich"] = &rich
	reqs["minimal"] = checkRequest("GET", "/", nil, "")
	reqs["truncated"] = checkRequest("POST", "/a/b?c=d", map[string]string{"content-type": "application/json", "content-length": "99"}, "{")
	for name, req := range reqs {
		t.Run(name, func(t *testing.T) {
			fast, err := BuildInput(&Input{Check: req})
			if err != nil {
				t.Fatal(err)
			}
			slow, err := naiveInput(req)
			if err != nil {
				t.Fatal(err)
			}
			if f, s := canonicalJSON(t, fast), canonicalJSON(t, slow); f != s {
				t.Fatalf("inputs differ\nfast  %s\nnaive %s", f, s)
			}
		})
	}
}
