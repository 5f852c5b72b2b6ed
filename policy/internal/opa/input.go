package opa

import (
	"io"
	"mime"
	"mime/multipart"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	ast "github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// Input is what one decision is made on.
type Input struct {
	// Check is the request Envoy sent. Required, with attributes.request.http.
	Check *authv3.CheckRequest
	// ParsedBody, when HasParsedBody is set, is the request body the
	// caller already decoded (map[string]any, []any, json.Number, string,
	// bool, nil; or map[string][]string for a form), so the body is parsed
	// once per request and shared with the schema step. It is used as
	// input.parsed_body unless the body is truncated (then null, like
	// opa-envoy-plugin). Without it, Eval parses the body itself exactly
	// like opa-envoy-plugin (JSON, form-urlencoded, multipart/form-data).
	ParsedBody    any
	HasParsedBody bool
	// Meshward, when not nil, becomes input.meshward. opa-envoy-plugin
	// has no such key, so policies written for it never read it.
	Meshward *Meshward
}

// Meshward is meshward's own view of the caller, from its identity step.
type Meshward struct {
	// Principal is the verified SPIFFE ID of the peer.
	Principal string
	// Roles and Attributes come from the matching identity entry.
	Roles      []string
	Attributes map[string]string
	// Claims are the verified end-user JWT claims, if any (JSON values).
	Claims map[string]any
	// Rule names the declarative rule that matched, if any.
	Rule string
}

// BuildInput returns the input document a policy sees for in, built
// directly from the protobuf message (no JSON round trip) as a lazy object
// whose parts become ast values when a policy reads them (see native.go).
// The document equals opa-envoy-plugin's for v3 (plus input.meshward when
// set). Errors wrap [ErrInput].
func BuildInput(in *Input) (ast.Value, error) {
	return buildLazyInput(in, nil)
}

// headerMapToMap reads header_map (sent instead of headers when Envoy's
// encode_raw_headers is on) for the content-type and content-length
// look-ups only. opa-envoy-plugin reads only headers; using header_map
// when headers is empty lets the same body parsing apply.
func headerMapToMap(h *corev3.HeaderMap) map[string]string {
	m := map[string]string{}
	for _, hv := range h.GetHeaders() {
		v := hv.GetValue()
		if v == "" {
			v = string(hv.GetRawValue())
		}
		if _, dup := m[hv.GetKey()]; !dup {
			m[hv.GetKey()] = v
		}
	}
	return m
}

// parseMultipart mirrors opa-envoy-plugin: form name -> list of values,
// parts with an application/json content type decoded as JSON.
func parseMultipart(ct, payload string) (ast.Value, error) {
	_, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, err
	}
	boundary, ok := params["boundary"]
	if !ok {
		return ast.Null{}, nil
	}
	values := map[string][]any{}
	mr := multipart.NewReader(strings.NewReader(payload), boundary)
	for {
		p, err := mr.NextPart()
		if err == io.EOF { //nolint:errorlint // opa-envoy-plugin ends only at a bare EOF; a wrapped one (no boundary) is an error
			break
		}
		if err != nil {
			return nil, err
		}
		name := p.FormName()
		if name == "" {
			continue
		}
		data, err := io.ReadAll(p)
		if err != nil {
			return nil, err
		}
		if strings.Contains(p.Header.Get("Content-Type"), "application/json") {
			var x any
			if err := util.UnmarshalJSON(data, &x); err != nil {
				return nil, err
			}
			values[name] = append(values[name], x)
		} else {
			values[name] = append(values[name], string(data))
		}
	}
	return goToValue(values)
}
