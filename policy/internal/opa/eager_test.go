package opa

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"

	ast "github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// The eager input builder: the same document as BuildInput, built as ast
// values throughout. Production serves the lazy document (native.go); this
// one is the tests' oracle that the lazy one converts to exactly it.

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
	if p := in.Check.GetAttributes().GetSource().GetPrincipal(); p != "" {
		obj.Insert(ast.StringTerm("source_principal"), ast.StringTerm(p))
	}

	if in.Meshward != nil {
		mv, err := in.Meshward.value()
		if err != nil {
			return nil, fmt.Errorf("build input: %w: meshward: %w", ErrInput, err)
		}
		obj.Insert(keyMeshward, ast.NewTerm(mv))
	}
	return obj, nil
}

// parsePathAndQuery mirrors opa-envoy-plugin: the path before "?"
// unescaped and split on "/" after trimming leading slashes, and the query
// parsed strictly as key -> list of values.
func parsePathAndQuery(path string) (ast.Value, ast.Value, error) {
	rawPath, rawQuery, _ := strings.Cut(path, "?")
	decoded, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, nil, err
	}
	vals, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, nil, err
	}
	segs := strings.Split(strings.TrimLeft(decoded, "/"), "/")
	terms := make([]*ast.Term, len(segs))
	for i, s := range segs {
		terms[i] = ast.StringTerm(s)
	}
	q := ast.NewObject()
	for k, vs := range vals {
		vt := make([]*ast.Term, len(vs))
		for i, v := range vs {
			vt[i] = ast.StringTerm(v)
		}
		q.Insert(ast.StringTerm(k), ast.ArrayTerm(vt...))
	}
	return ast.NewArray(terms...), q, nil
}

const (
	bodyJSON = iota
	bodyForm
	bodyMultipart
)

// parsedBody mirrors opa-envoy-plugin's getParsedBody, using the caller's
// parsed body when it has one.
func parsedBody(in *Input, headers map[string]string, body string, rawBody []byte) (ast.Value, bool, error) {
	if headers["x-envoy-auth-partial-body"] == "true" {
		return ast.Null{}, true, nil
	}
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
	if in.HasParsedBody && kind == bodyJSON {
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
