package opa

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	ast "github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestLazyInputMatchesEager: the lazy input document converts to exactly
// the ast value the eager build gives, whole and read path by path.
func TestLazyInputMatchesEager(t *testing.T) {
	// With the pinned go-control-plane the typed conversions are the ones
	// compared here (a newer one with more fields would use the walk).
	if !httpRequestTyped || !peerTyped || !checkTyped || !attributesTyped {
		t.Errorf("typed conversions off: http request %v, peer %v, check request %v, attributes %v",
			httpRequestTyped, peerTyped, checkTyped, attributesTyped)
	}
	var rich authv3.CheckRequest
	if err := protojson.Unmarshal([]byte(richRequest), &rich); err != nil {
		t.Fatal(err)
	}
	form := map[string]string{"content-type": "application/x-www-form-urlencoded"}
	jsonCT := map[string]string{"content-type": "application/json"}
	cases := map[string]*Input{
		"rich":      {Check: &rich},
		"minimal":   {Check: checkRequest("GET", "/", nil, "")},
		"query":     {Check: checkRequest("GET", "/a%20b/x?a=1&a=2&b=", nil, "")},
		"truncated": {Check: checkRequest("POST", "/a", map[string]string{"content-type": "application/json", "content-length": "99"}, "{")},
		"json body": {Check: checkRequest("POST", "/t", jsonCT, `{"n": 1.50, "big": 12345678901234567890, "l": [true, null, "s", {"x": -0.0}]}`)},
		"form body": {Check: checkRequest("POST", "/f", form, "a=1&a=2&b=x+y")},
		"multipart body": {Check: checkRequest("POST", "/m", map[string]string{"content-type": "multipart/form-data; boundary=XX"},
			"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XX\r\nContent-Disposition: form-data; name=\"j\"\r\nContent-Type: application/json\r\n\r\n{\"k\": 2.5}\r\n--XX--\r\n")},
		"shared native body": {Check: checkRequest("POST", "/t", jsonCT, "{}"), HasParsedBody: true,
			ParsedBody: map[string]any{"n": json.Number("3"), "l": []any{"a", nil, false}}},
		"shared float body": {Check: checkRequest("POST", "/t", jsonCT, "{}"), HasParsedBody: true,
			ParsedBody: map[string]any{"f": 1e-7, "i": 3.0, "m": map[string][]string{"a": {"b"}}}},
		"shared form body": {Check: checkRequest("POST", "/f", form, "a=1"), HasParsedBody: true,
			ParsedBody: map[string][]string{"a": {"1"}}},
		"meshward": {Check: checkRequest("GET", "/", nil, ""), Meshward: &Meshward{
			Principal: "spiffe://mesh.local/ns/default/sa/planner", Roles: []string{"operator", "viewer"},
			Attributes: map[string]string{"b": "2", "a": "1"}, Claims: map[string]any{"amr": []any{"pwd"}, "exp": 1.7e9},
			Rule: "r",
		}},
		"meshward without claims": {Check: checkRequest("GET", "/", nil, ""), Meshward: &Meshward{Principal: "p"}},
	}
	for _, f := range []string{"allow.json", "deny_abac.json", "deny_schema.json", "allow_get.json"} {
		cases[f] = &Input{Check: loadCheck(t, filepath.Join("testdata", "refload", f))}
	}
	// Peers take a typed conversion: every field and address form.
	for name, peers := range map[string]string{
		"peers: every socket address field": `"source": {"address": {"socketAddress": {"address": "::1", "namedPort": "https", "resolverName": "r", "ipv4Compat": true, "networkNamespaceFilepath": "/n"}},
			"service": "s", "labels": {"a": "1", "b": ""}, "principal": "p", "certificate": "c"},
			"destination": {"address": {"socketAddress": {"portValue": 0}}}`,
		"peers: UDP and internal addresses": `"source": {"address": {"socketAddress": {"protocol": "UDP", "address": "10.0.0.1", "portValue": 53}}},
			"destination": {"address": {"envoyInternalAddress": {"serverListenerName": "l", "endpointId": "e"}}}`,
		"peers: empty": `"source": {}, "destination": {"address": {}}`,
	} {
		var req authv3.CheckRequest
		js := `{"attributes": {` + peers + `, "request": {"http": {"method": "GET", "path": "/"}}}}`
		if err := protojson.Unmarshal([]byte(js), &req); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cases[name] = &Input{Check: &req}
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			eager, err := buildEagerInput(in)
			if err != nil {
				t.Fatal(err)
			}
			// Path by path first, on a fresh lazy document, then whole.
			lazy, err := buildLazyInput(in, nil)
			if err != nil {
				t.Fatal(err)
			}
			comparePaths(t, eager.(ast.Object), lazy.(ast.Object), nil)
			whole, err := buildLazyInput(in, nil)
			if err != nil {
				t.Fatal(err)
			}
			if ast.Compare(whole, eager) != 0 || whole.Hash() != eager.Hash() || whole.String() != eager.String() {
				t.Fatalf("lazy document differs\nlazy  %v\neager %v", whole, eager)
			}
		})
	}
}

// comparePaths reads every key of want through got's Get and Find, as
// evaluation does, and compares the values.
func comparePaths(t *testing.T, want, got ast.Object, path ast.Ref) {
	t.Helper()
	if want.Len() != got.Len() {
		t.Fatalf("%v: %d keys, want %d", path, got.Len(), want.Len())
	}
	for _, k := range want.Keys() {
		p := append(append(ast.Ref{}, path...), k)
		w, g := want.Get(k), got.Get(k)
		if g == nil {
			t.Fatalf("%v missing", p)
		}
		if wo, ok := w.Value.(ast.Object); ok {
			go2, ok := g.Value.(ast.Object)
			if !ok {
				t.Fatalf("%v = %v, want an object", p, g)
			}
			comparePaths(t, wo, go2, p)
			continue
		}
		if ast.Compare(w.Value, g.Value) != 0 {
			t.Fatalf("%v = %v, want %v", p, g, w)
		}
		if f, err := got.Find(ast.Ref{k}); err != nil || ast.Compare(f, w.Value) != 0 {
			t.Fatalf("Find %v = %v, %v; want %v", p, f, err, w)
		}
	}
}

// TestInvalidUTF8IsInputError: a string the typed conversions read that
// is not valid UTF-8 (which protojson refuses) makes the request an input
// error, as the reflective walk and the eager build do.
func TestInvalidUTF8IsInputError(t *testing.T) {
	bad := "\xff"
	for name, set := range map[string]func(c *authv3.CheckRequest){
		"principal":     func(c *authv3.CheckRequest) { c.Attributes.Source.Principal = bad },
		"label key":     func(c *authv3.CheckRequest) { c.Attributes.Source.Labels = map[string]string{bad: "v"} },
		"label value":   func(c *authv3.CheckRequest) { c.Attributes.Source.Labels = map[string]string{"k": bad} },
		"http method":   func(c *authv3.CheckRequest) { c.Attributes.Request.Http.Method = bad },
		"header value":  func(c *authv3.CheckRequest) { c.Attributes.Request.Http.Headers["x"] = bad },
		"extension key": func(c *authv3.CheckRequest) { c.Attributes.ContextExtensions = map[string]string{bad: "v"} },
		"socket address": func(c *authv3.CheckRequest) {
			c.Attributes.Source.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{Address: bad}}}
		},
		"named port": func(c *authv3.CheckRequest) {
			c.Attributes.Source.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: bad}}}}
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := checkRequest("GET", "/", nil, "")
			set(c)
			in := &Input{Check: c}
			if _, err := buildLazyInput(in, nil); !errors.Is(err, ErrInput) {
				t.Errorf("lazy build: %v, want ErrInput", err)
			}
			if _, err := buildEagerInput(in); err == nil {
				t.Error("the eager build accepts it")
			}
		})
	}
}
