package opa

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	ast "github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	msgbody "github.com/meshward/meshward/policy/internal/body"
)

// The input document is served as an ast.LazyObject over plain Go values
// (map[string]any, []any, string, json.Number, bool, nil): OPA converts
// to ast only the parts a policy reads (input.attributes.source.principal
// converts three small objects, not the headers, addresses and body), and
// a Go map costs a fraction of an ast object to build. Anything that needs
// the whole document (comparison, hashing, printing) converts all of it,
// to exactly the value the eager build in the tests gives (TestLazyInputMatchesEager).
// The Go values are only read, never modified, by OPA and this package.

// buildLazyInput is BuildInput's document as a lazy object.
func buildLazyInput(in *Input, n need) (ast.Value, error) {
	doc, err := buildNativeInput(in, n)
	if err != nil {
		return nil, err
	}
	return ast.LazyObject(doc), nil
}

// buildNativeInput is the plain Go values under buildLazyInput's object.
func buildNativeInput(in *Input, n need) (map[string]any, error) {
	if in == nil || in.Check == nil {
		return nil, fmt.Errorf("build input: %w: no check request", ErrInput)
	}
	httpReq := in.Check.GetAttributes().GetRequest().GetHttp()
	if httpReq == nil {
		return nil, fmt.Errorf("build input: %w: missing attributes.request.http", ErrInput)
	}
	doc, err := protoToNative(in.Check.ProtoReflect(), n)
	if err != nil {
		return nil, fmt.Errorf("build input: %w: %w", ErrInput, err)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("build input: %w: check request is not an object", ErrInput)
	}
	if _, ok := n.has("version"); ok {
		obj["version"] = map[string]any{"ext_authz": "v3", "encoding": "protojson"}
	}

	// The path and the body are parsed even when the policy reads
	// neither: a request opa-envoy-plugin cannot parse is an input error
	// whatever the policy.
	// Like opa-envoy-plugin: the path before "?" is unescaped, the
	// query parsed strictly (a bad escape or a ";" separator is an error,
	// not a parameter silently dropped).
	rawPath, rawQuery, _ := strings.Cut(httpReq.GetPath(), "?")
	decodedPath, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, fmt.Errorf("build input: %w: path: %w", ErrInput, err)
	}
	vals, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("build input: %w: query: %w", ErrInput, err)
	}
	if _, ok := n.has("parsed_path"); ok {
		segs := strings.Split(strings.TrimLeft(decodedPath, "/"), "/")
		path := make([]any, len(segs))
		for i, s := range segs {
			path[i] = s
		}
		obj["parsed_path"] = path
	}
	if _, ok := n.has("parsed_query"); ok {
		query := make(map[string]any, len(vals))
		for k, vs := range vals {
			query[k] = stringsToNative(vs)
		}
		obj["parsed_query"] = query
	}
	if p := in.Check.GetAttributes().GetSource().GetPrincipal(); p != "" {
		if _, ok := n.has("source_principal"); ok {
			obj["source_principal"] = p
		}
	}

	headers := httpReq.GetHeaders()
	if len(headers) == 0 && httpReq.GetHeaderMap() != nil {
		headers = headerMapToMap(httpReq.GetHeaderMap())
	}
	body, truncated, err := parsedBodyNative(in, headers, httpReq.GetBody(), httpReq.GetRawBody())
	if err != nil {
		return nil, fmt.Errorf("build input: %w: body: %w", ErrInput, err)
	}
	if _, ok := n.has("parsed_body"); ok {
		obj["parsed_body"] = body
	}
	if _, ok := n.has("truncated_body"); ok {
		obj["truncated_body"] = truncated
	}

	if _, ok := n.has("meshward"); ok && in.Meshward != nil {
		mv, err := in.Meshward.native()
		if err != nil {
			return nil, fmt.Errorf("build input: %w: meshward: %w", ErrInput, err)
		}
		obj["meshward"] = mv
	}
	return obj, nil
}

// parsedBodyNative mirrors opa-envoy-plugin's getParsedBody, as plain Go
// values, using the caller's parsed body when it has one.
func parsedBodyNative(in *Input, headers map[string]string, body string, rawBody []byte) (any, bool, error) {
	if headers["x-envoy-auth-partial-body"] == "true" {
		return nil, true, nil // Envoy cut the body: truncated, like opa-envoy-plugin
	}
	ct, ok := headers["content-type"]
	if !ok {
		return nil, false, nil
	}
	kind := msgbody.Classify(ct)
	switch kind {
	case msgbody.MediaGRPC:
		return nil, false, nil // gRPC: parsed_body null (opa-envoy-plugin needs descriptor sets, meshward has none)
	case msgbody.MediaOther:
		return nil, false, nil
	}
	payload := body
	if payload == "" {
		if len(rawBody) == 0 {
			return nil, false, nil
		}
		payload = string(rawBody)
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("content-length: %w", err)
		}
		if n != -1 && n > int64(len(payload)) {
			return nil, true, nil
		}
	}
	if in.HasParsedBody && kind == msgbody.MediaJSON {
		// The caller's body is JSON decoded; it stands for
		// parsed_body only where opa-envoy-plugin parses JSON too.
		v, err := toNative(in.ParsedBody)
		return v, false, err
	}
	switch kind {
	case msgbody.MediaJSON:
		// meshward's strict decoder gives exactly what encoding/json
		// would for every body it accepts, faster; what it refuses
		// (duplicate keys, invalid UTF-8, huge or deep bodies, bad
		// JSON) goes the way opa-envoy-plugin parses it.
		if x, err := msgbody.DecodeString(payload, msgbody.Limits{}); err == nil {
			return x, false, nil
		}
		var x any
		if err := util.UnmarshalJSON([]byte(payload), &x); err != nil {
			return nil, false, err
		}
		v, err := toNative(x)
		return v, false, err
	case msgbody.MediaForm:
		vals, err := url.ParseQuery(payload)
		if err != nil {
			return nil, false, err
		}
		v, err := toNative(map[string][]string(vals))
		return v, false, err
	default:
		v, err := parseMultipart(ct, payload)
		if err != nil {
			return nil, false, err
		}
		return astToNative(v)
	}
}

func astToNative(v ast.Value) (any, bool, error) {
	x, err := ast.JSON(v)
	if err != nil {
		return nil, false, err
	}
	n, err := toNative(x)
	return n, false, err
}

func stringsToNative(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (m *Meshward) native() (any, error) {
	roles := stringsToNative(m.Roles)
	attrs := make(map[string]any, len(m.Attributes))
	for k, v := range m.Attributes {
		attrs[k] = v
	}
	claims := any(map[string]any{})
	if m.Claims != nil {
		var err error
		if claims, err = toNative(m.Claims); err != nil {
			return nil, err
		}
	}
	return map[string]any{
		"principal": m.Principal, "roles": roles, "attributes": attrs, "claims": claims, "rule": m.Rule,
	}, nil
}

// isNative reports whether x holds only the plain values a lazy object
// converts exactly like goToValue (no float64, typed maps or ast values).
func isNative(x any) bool {
	switch x := x.(type) {
	case nil, bool, string, json.Number:
		return true
	case map[string]any:
		for _, v := range x {
			if !isNative(v) {
				return false
			}
		}
		return true
	case []any:
		for _, v := range x {
			if !isNative(v) {
				return false
			}
		}
		return true
	}
	return false
}

// toNative returns x as plain values, converting (copying) only when x
// holds something else; the result converts to the same ast value as
// goToValue(x).
func toNative(x any) (any, error) {
	if isNative(x) {
		return x, nil
	}
	v, err := goToValue(x)
	if err != nil {
		return nil, err
	}
	return ast.JSON(v)
}

// protoToNative is protoToValue's document as plain Go values.
func protoToNative(m protoreflect.Message, n need) (any, error) {
	switch m.Descriptor().FullName() {
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue":
		v, err := protoToValue(m) // rare in a CheckRequest (metadata): same rules
		if err != nil {
			return nil, err
		}
		return ast.JSON(v)
	case "google.protobuf.Timestamp":
		if t, ok := m.Interface().(*timestamppb.Timestamp); ok {
			v, err := timestampToValue(t)
			if err != nil {
				return nil, err
			}
			return string(v.(ast.String)), nil
		}
	}
	switch x := m.Interface().(type) {
	case *authv3.CheckRequest:
		if checkTyped {
			return checkRequestToNative(x, n)
		}
	case *authv3.AttributeContext:
		if attributesTyped {
			return attributesToNative(x, n)
		}
	case *authv3.AttributeContext_Request:
		if checkTyped {
			return requestToNative(x, n)
		}
	case *authv3.AttributeContext_HttpRequest:
		if httpRequestTyped {
			return httpRequestToNative(x, n)
		}
	case *authv3.AttributeContext_Peer:
		if peerTyped {
			return peerToNative(x, n)
		}
	}
	if m.Descriptor().FullName().Parent() == "google.protobuf" {
		v, err := protojsonValue(m)
		if err != nil {
			return nil, err
		}
		return ast.JSON(v)
	}
	obj := make(map[string]any, min(m.Descriptor().Fields().Len(), 8))
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		sub, ok := n.has(fd.JSONName())
		if !ok {
			return true
		}
		var val any
		switch {
		case fd.IsList():
			l := v.List()
			out := make([]any, l.Len())
			for i := range l.Len() {
				if out[i], err = singularToNative(fd, l.Get(i), nil); err != nil {
					break
				}
			}
			val = out
		case fd.IsMap():
			val, err = mapFieldToNative(fd, v.Map())
		default:
			val, err = singularToNative(fd, v, sub)
		}
		if err != nil {
			err = fmt.Errorf("%s: %w", fd.JSONName(), err)
			return false
		}
		obj[fd.JSONName()] = val
		return true
	})
	if err != nil {
		return nil, err
	}
	return obj, nil
}

func mapFieldToNative(fd protoreflect.FieldDescriptor, m protoreflect.Map) (any, error) {
	obj := make(map[string]any, m.Len())
	vd := fd.MapValue()
	stringKeys := fd.MapKey().Kind() == protoreflect.StringKind
	var err error
	m.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		key := k.String() // bool and integer keys print as protojson does
		if stringKeys && !utf8.ValidString(key) {
			err = errors.New("map key contains invalid UTF-8")
			return false
		}
		var val any
		if val, err = singularToNative(vd, v, nil); err != nil {
			return false
		}
		obj[key] = val
		return true
	})
	if err != nil {
		return nil, err
	}
	return obj, nil
}

func singularToNative(fd protoreflect.FieldDescriptor, v protoreflect.Value, n need) (any, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		s := v.String()
		if !utf8.ValidString(s) {
			return nil, errors.New("string field contains invalid UTF-8")
		}
		return s, nil
	case protoreflect.BoolKind:
		return v.Bool(), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return protoToNative(v.Message(), n)
	case protoreflect.BytesKind:
		return base64.StdEncoding.EncodeToString(v.Bytes()), nil
	}
	val, err := singularToValue(fd, v)
	if err != nil {
		return nil, err
	}
	switch val := val.(type) {
	case ast.String:
		return string(val), nil
	case ast.Number:
		return json.Number(val), nil
	case ast.Null:
		return nil, nil
	}
	return ast.JSON(val)
}

// The typed conversions are used only while the generated messages have
// exactly the fields they handle (a newer go-control-plane with more
// falls back to the reflective walk, which handles every field).
var (
	httpRequestTyped = fieldsUpTo(&authv3.AttributeContext_HttpRequest{}, 13)
	peerTyped        = fieldsUpTo(&authv3.AttributeContext_Peer{}, 5) &&
		fieldsUpTo(&corev3.Address{}, 3) && fieldsUpTo(&corev3.SocketAddress{}, 7)
	checkTyped = fieldsUpTo(&authv3.CheckRequest{}, 1) && fieldsUpTo(&authv3.AttributeContext_Request{}, 2)
	// AttributeContext's fields 3 and 5 to 9 were removed long ago.
	attributesTyped = exactFields(&authv3.AttributeContext{}, 1, 2, 4, 10, 11, 12, 13)
)

// fieldsUpTo reports whether m's fields are numbered exactly 1 to n.
func fieldsUpTo(m proto.Message, n protoreflect.FieldNumber) bool {
	nums := make([]protoreflect.FieldNumber, n)
	for i := range nums {
		nums[i] = protoreflect.FieldNumber(i) + 1
	}
	return exactFields(m, nums...)
}

// exactFields reports whether m's fields have exactly the numbers nums.
func exactFields(m proto.Message, nums ...protoreflect.FieldNumber) bool {
	fields := m.ProtoReflect().Descriptor().Fields()
	if fields.Len() != len(nums) {
		return false
	}
	for _, i := range nums {
		if fields.ByNumber(i) == nil {
			return false
		}
	}
	return true
}

// checkRequestToNative, attributesToNative and requestToNative convert
// the outer messages of a CheckRequest without reflection; what they
// hold goes through protoToNative, typed where it can.
func checkRequestToNative(c *authv3.CheckRequest, n need) (any, error) {
	obj := make(map[string]any, 1)
	if err := addMessage(obj, n, "attributes", c.GetAttributes()); err != nil {
		return nil, err
	}
	return obj, nil
}

func attributesToNative(a *authv3.AttributeContext, n need) (any, error) {
	obj := make(map[string]any, 4)
	for _, f := range [...]struct {
		name string
		m    proto.Message
	}{
		{"source", a.GetSource()}, {"destination", a.GetDestination()}, {"request", a.GetRequest()},
		{"metadataContext", a.GetMetadataContext()}, {"tlsSession", a.GetTlsSession()},
		{"routeMetadataContext", a.GetRouteMetadataContext()},
	} {
		if err := addMessage(obj, n, f.name, f.m); err != nil {
			return nil, err
		}
	}
	if err := addStringMap(obj, n, "contextExtensions", a.GetContextExtensions()); err != nil {
		return nil, err
	}
	return obj, nil
}

func requestToNative(r *authv3.AttributeContext_Request, n need) (any, error) {
	obj := make(map[string]any, 2)
	if err := addMessage(obj, n, "time", r.GetTime()); err != nil {
		return nil, err
	}
	if err := addMessage(obj, n, "http", r.GetHttp()); err != nil {
		return nil, err
	}
	return obj, nil
}

// stringField is a proto3 string field by its JSON name.
type stringField struct{ name, v string }

// addStrings sets each field n needs and that is set (not empty) on obj,
// refusing invalid UTF-8 as protojson does.
func addStrings(obj map[string]any, n need, fields ...stringField) error {
	for _, f := range fields {
		if _, want := n.has(f.name); f.v == "" || !want {
			continue
		}
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("%s: string field contains invalid UTF-8", f.name)
		}
		obj[f.name] = f.v
	}
	return nil
}

// addStringMap sets obj[name] to the map<string, string> field m when n
// needs it and it is not empty, refusing invalid UTF-8 as protojson does.
func addStringMap(obj map[string]any, n need, name string, m map[string]string) error {
	if _, want := n.has(name); !want || len(m) == 0 {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		if !utf8.ValidString(k) {
			return fmt.Errorf("%s: map key contains invalid UTF-8", name)
		}
		if !utf8.ValidString(v) {
			return fmt.Errorf("%s: string field contains invalid UTF-8", name)
		}
		out[k] = v
	}
	obj[name] = out
	return nil
}

// addMessage sets obj[name] to message m converted, when m is set (a
// typed nil is not) and n needs it.
func addMessage(obj map[string]any, n need, name string, m proto.Message) error {
	sub, want := n.has(name)
	if !want || m == nil || !m.ProtoReflect().IsValid() {
		return nil
	}
	v, err := protoToNative(m.ProtoReflect(), sub)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	obj[name] = v
	return nil
}

// peerToNative converts a source or destination peer without reflection
// (protojson's rules: proto3 scalars omitted when zero, a oneof member
// kept when set, uint32 as a number). An address other than a plain TCP
// socket address takes the reflective walk.
func peerToNative(p *authv3.AttributeContext_Peer, n need) (any, error) {
	obj := make(map[string]any, 4)
	if _, want := n.has("address"); want && p.GetAddress() != nil {
		v, err := addressToNative(p.GetAddress())
		if err != nil {
			return nil, fmt.Errorf("address: %w", err)
		}
		obj["address"] = v
	}
	err := addStrings(obj, n, stringField{"service", p.GetService()}, stringField{"principal", p.GetPrincipal()},
		stringField{"certificate", p.GetCertificate()})
	if err != nil {
		return nil, err
	}
	if err := addStringMap(obj, n, "labels", p.GetLabels()); err != nil {
		return nil, err
	}
	return obj, nil
}

func addressToNative(a *corev3.Address) (any, error) {
	sa := a.GetSocketAddress()
	if sa == nil || sa.GetProtocol() != corev3.SocketAddress_TCP {
		return protoToNative(a.ProtoReflect(), nil)
	}
	obj := make(map[string]any, 2)
	err := addStrings(obj, nil, stringField{"address", sa.GetAddress()}, stringField{"resolverName", sa.GetResolverName()},
		stringField{"networkNamespaceFilepath", sa.GetNetworkNamespaceFilepath()})
	if err != nil {
		return nil, fmt.Errorf("socketAddress: %w", err)
	}
	switch ps := sa.GetPortSpecifier().(type) {
	case *corev3.SocketAddress_PortValue:
		obj["portValue"] = json.Number(strconv.FormatUint(uint64(ps.PortValue), 10))
	case *corev3.SocketAddress_NamedPort:
		// A oneof member is kept even when empty, so not addStrings.
		if !utf8.ValidString(ps.NamedPort) {
			return nil, errors.New("socketAddress: namedPort: string field contains invalid UTF-8")
		}
		obj["namedPort"] = ps.NamedPort
	}
	if sa.GetIpv4Compat() {
		obj["ipv4Compat"] = true
	}
	return map[string]any{"socketAddress": obj}, nil
}

// httpRequestToNative converts the request's HTTP attributes, the largest
// and busiest part of a CheckRequest, without reflection: protojson's
// rules for these fields (proto3 scalars omitted when zero, int64 as a
// string, bytes as base64, header_map as a message).
func httpRequestToNative(h *authv3.AttributeContext_HttpRequest, n need) (any, error) {
	obj := make(map[string]any, 8)
	err := addStrings(obj, n,
		stringField{"id", h.GetId()}, stringField{"method", h.GetMethod()}, stringField{"path", h.GetPath()},
		stringField{"host", h.GetHost()}, stringField{"scheme", h.GetScheme()}, stringField{"query", h.GetQuery()},
		stringField{"fragment", h.GetFragment()}, stringField{"protocol", h.GetProtocol()}, stringField{"body", h.GetBody()})
	if err != nil {
		return nil, err
	}
	if err := addStringMap(obj, n, "headers", h.GetHeaders()); err != nil {
		return nil, err
	}
	if _, want := n.has("headerMap"); want && h.GetHeaderMap() != nil {
		v, err := protoToNative(h.GetHeaderMap().ProtoReflect(), nil)
		if err != nil {
			return nil, fmt.Errorf("headerMap: %w", err)
		}
		obj["headerMap"] = v
	}
	if _, want := n.has("size"); want && h.GetSize() != 0 {
		obj["size"] = strconv.FormatInt(h.GetSize(), 10)
	}
	if _, want := n.has("rawBody"); want && len(h.GetRawBody()) > 0 {
		obj["rawBody"] = base64.StdEncoding.EncodeToString(h.GetRawBody())
	}
	return obj, nil
}
