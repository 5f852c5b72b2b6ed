package opa

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"sort"
	"strconv"
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

// Keys of the input document.
var (
	keyVersion       = ast.StringTerm("version")
	keyParsedPath    = ast.StringTerm("parsed_path")
	keyParsedQuery   = ast.StringTerm("parsed_query")
	keyParsedBody    = ast.StringTerm("parsed_body")
	keyTruncatedBody = ast.StringTerm("truncated_body")
	keyMeshward      = ast.StringTerm("meshward")

	// versionTerm is opa-envoy-plugin's input.version for v3.
	versionTerm = ast.ObjectTerm(
		ast.Item(ast.StringTerm("ext_authz"), ast.StringTerm("v3")),
		ast.Item(ast.StringTerm("encoding"), ast.StringTerm("protojson")),
	)
)

// BuildInput returns the input document a policy sees for in, built
// directly from the protobuf message (no JSON round trip) as a lazy object
// whose parts become ast values when a policy reads them (see native.go).
// The document equals opa-envoy-plugin's for v3 (plus input.meshward when
// set). Errors wrap [ErrInput].
func BuildInput(in *Input) (ast.Value, error) {
	return buildLazyInput(in)
}

// buildEagerInput builds the same document as ast values throughout; the
// tests check that the lazy document converts to exactly this.
func buildEagerInput(in *Input) (ast.Value, error) {
	if in == nil || in.Check == nil {
		return nil, fmt.Errorf("build input: %w: no check request", ErrInput)
	}
	httpReq := in.Check.GetAttributes().GetRequest().GetHttp()
	if httpReq == nil {
		return nil, fmt.Errorf("build input: %w: missing attributes.request.http", ErrInput)
	}
	doc, err := protoToValue(in.Check.ProtoReflect())
	if err != nil {
		return nil, fmt.Errorf("build input: %w: %w", ErrInput, err)
	}
	obj, ok := doc.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("build input: %w: check request is not an object", ErrInput)
	}
	obj.Insert(keyVersion, versionTerm)

	parsedPath, parsedQuery, err := parsePathAndQuery(httpReq.GetPath())
	if err != nil {
		return nil, fmt.Errorf("build input: %w: path: %w", ErrInput, err)
	}
	obj.Insert(keyParsedPath, ast.NewTerm(parsedPath))
	obj.Insert(keyParsedQuery, ast.NewTerm(parsedQuery))

	headers := httpReq.GetHeaders()
	if len(headers) == 0 && httpReq.GetHeaderMap() != nil {
		headers = headerMapToMap(httpReq.GetHeaderMap())
	}
	body, truncated, err := parsedBody(in, headers, httpReq.GetBody(), httpReq.GetRawBody())
	if err != nil {
		return nil, fmt.Errorf("build input: %w: body: %w", ErrInput, err)
	}
	obj.Insert(keyParsedBody, ast.NewTerm(body))
	obj.Insert(keyTruncatedBody, ast.BooleanTerm(truncated))

	if in.Meshward != nil {
		mv, err := in.Meshward.value()
		if err != nil {
			return nil, fmt.Errorf("build input: %w: meshward: %w", ErrInput, err)
		}
		obj.Insert(keyMeshward, ast.NewTerm(mv))
	}
	return obj, nil
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

// parsePathAndQuery mirrors opa-envoy-plugin: url.Parse, the unescaped
// path split on "/" after trimming leading slashes, and the query as
// key -> list of values.
func parsePathAndQuery(path string) (ast.Value, ast.Value, error) {
	u, err := url.Parse(path)
	if err != nil {
		return nil, nil, err
	}
	segs := strings.Split(strings.TrimLeft(u.Path, "/"), "/")
	terms := make([]*ast.Term, len(segs))
	for i, s := range segs {
		terms[i] = ast.StringTerm(s)
	}
	q := ast.NewObject()
	if u.RawQuery != "" {
		for k, vs := range u.Query() {
			vt := make([]*ast.Term, len(vs))
			for i, v := range vs {
				vt[i] = ast.StringTerm(v)
			}
			q.Insert(ast.StringTerm(k), ast.ArrayTerm(vt...))
		}
	}
	return ast.NewArray(terms...), q, nil
}

// parsedBody mirrors opa-envoy-plugin's getParsedBody, using the caller's
// parsed body when it has one.
func parsedBody(in *Input, headers map[string]string, body string, rawBody []byte) (ast.Value, bool, error) {
	ct, ok := headers["content-type"]
	if !ok {
		return ast.Null{}, false, nil
	}
	var kind int
	switch {
	case strings.Contains(ct, "application/json"):
		kind = bodyJSON
	case strings.Contains(ct, "application/grpc"):
		// opa-envoy-plugin decodes gRPC bodies only with configured
		// descriptor sets; meshward has none, so parsed_body is null.
		return ast.Null{}, false, nil
	case strings.Contains(ct, "application/x-www-form-urlencoded"):
		kind = bodyForm
	case strings.Contains(ct, "multipart/form-data"):
		kind = bodyMultipart
	default:
		return ast.Null{}, false, nil
	}
	payload := body
	if payload == "" {
		if len(rawBody) == 0 {
			return ast.Null{}, false, nil
		}
		payload = string(rawBody)
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("content-length: %w", err)
		}
		if n != -1 && n > int64(len(payload)) {
			return ast.Null{}, true, nil
		}
	}
	if in.HasParsedBody {
		v, err := goToValue(in.ParsedBody)
		return v, false, err
	}
	switch kind {
	case bodyJSON:
		var x any
		if err := util.UnmarshalJSON([]byte(payload), &x); err != nil {
			return nil, false, err
		}
		v, err := goToValue(x)
		return v, false, err
	case bodyForm:
		vals, err := url.ParseQuery(payload)
		if err != nil {
			return nil, false, err
		}
		v, err := goToValue(map[string][]string(vals))
		return v, false, err
	default:
		v, err := parseMultipart(ct, payload)
		return v, false, err
	}
}

const (
	bodyJSON = iota
	bodyForm
	bodyMultipart
)

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
		if errors.Is(err, io.EOF) {
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

func (m *Meshward) value() (ast.Value, error) {
	roles := make([]*ast.Term, len(m.Roles))
	for i, r := range m.Roles {
		roles[i] = ast.StringTerm(r)
	}
	attrs := ast.NewObjectWithCapacity(len(m.Attributes))
	keys := make([]string, 0, len(m.Attributes))
	for k := range m.Attributes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		attrs.Insert(ast.StringTerm(k), ast.StringTerm(m.Attributes[k]))
	}
	claims := ast.Value(ast.NewObject())
	if m.Claims != nil {
		var err error
		if claims, err = goToValue(m.Claims); err != nil {
			return nil, err
		}
	}
	return ast.NewObject(
		ast.Item(ast.StringTerm("principal"), ast.StringTerm(m.Principal)),
		ast.Item(ast.StringTerm("roles"), ast.ArrayTerm(roles...)),
		ast.Item(ast.StringTerm("attributes"), ast.NewTerm(attrs)),
		ast.Item(ast.StringTerm("claims"), ast.NewTerm(claims)),
		ast.Item(ast.StringTerm("rule"), ast.StringTerm(m.Rule)),
	), nil
}
