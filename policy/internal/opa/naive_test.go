package opa

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
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
	rawPath, rawQuery, _ := strings.Cut(h.GetPath(), "?")
	decoded, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, err
	}
	segs := strings.Split(strings.TrimLeft(decoded, "/"), "/")
	pp := make([]any, len(segs))
	for i, s := range segs {
		pp[i] = s
	}
	input["parsed_path"] = pp
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, err
	}
	pq := map[string]any{}
	for k, vs := range query {
		l := make([]any, len(vs))
		for i, v := range vs {
			l[i] = v
		}
		pq[k] = l
	}
	input["parsed_query"] = pq
	if p := req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		input["source_principal"] = p
	}
	body, truncated, err := pluginParsedBody(h.GetHeaders(), h.GetBody(), h.GetRawBody())
	if err != nil {
		return nil, err
	}
	input["parsed_body"] = body
	input["truncated_body"] = truncated
	return ast.InterfaceToValue(input)
}

// pluginParsedBody is opa-envoy-plugin's getParsedBody, written from its
// source independently of meshward's builders: the content-type is tested
// by substring (application/json, then application/grpc, then
// application/x-www-form-urlencoded, then multipart/form-data), the body
// is body or else raw_body, and a content-length above the body's length
// means truncated (parsed_body null).
func pluginParsedBody(headers map[string]string, body string, raw []byte) (any, bool, error) {
	if headers["x-envoy-auth-partial-body"] == "true" {
		return nil, true, nil
	}
	ct, ok := headers["content-type"]
	if !ok {
		return nil, false, nil
	}
	payload := body
	if payload == "" {
		payload = string(raw)
	}
	truncatedAt := func() (bool, error) {
		cl, ok := headers["content-length"]
		if !ok {
			return false, nil
		}
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return false, err
		}
		return n != -1 && n > int64(len(payload)), nil
	}
	switch {
	case strings.Contains(ct, "application/json"):
		if payload == "" {
			return nil, false, nil
		}
		if tr, err := truncatedAt(); err != nil || tr {
			return nil, tr, err
		}
		var x any
		err := util.UnmarshalJSON([]byte(payload), &x)
		return x, false, err
	case strings.Contains(ct, "application/grpc"):
		return nil, false, nil // no descriptor sets configured
	case strings.Contains(ct, "application/x-www-form-urlencoded"):
		if payload == "" {
			return nil, false, nil
		}
		if tr, err := truncatedAt(); err != nil || tr {
			return nil, tr, err
		}
		vals, err := url.ParseQuery(payload)
		if err != nil {
			return nil, false, err
		}
		return map[string][]string(vals), false, nil
	case strings.Contains(ct, "multipart/form-data"):
		if payload == "" {
			return nil, false, nil
		}
		if tr, err := truncatedAt(); err != nil || tr {
			return nil, tr, err
		}
		_, params, err := mime.ParseMediaType(ct)
		if err != nil {
			return nil, false, err
		}
		boundary, ok := params["boundary"]
		if !ok {
			return nil, false, nil
		}
		values := map[string][]any{}
		mr := multipart.NewReader(strings.NewReader(payload), boundary)
		for {
			p, err := mr.NextPart()
			if err == io.EOF { //nolint:errorlint // as opa-envoy-plugin: only a bare EOF ends the parts
				break
			}
			if err != nil {
				return nil, false, err
			}
			name := p.FormName()
			if name == "" {
				continue
			}
			data, err := io.ReadAll(p)
			if err != nil {
				return nil, false, err
			}
			if strings.Contains(p.Header.Get("Content-Type"), "application/json") {
				var x any
				if err := util.UnmarshalJSON(data, &x); err != nil {
					return nil, false, err
				}
				values[name] = append(values[name], x)
			} else {
				values[name] = append(values[name], string(data))
			}
		}
		return values, false, nil
	}
	return nil, false, nil
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
