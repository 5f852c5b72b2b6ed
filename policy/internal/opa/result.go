package opa

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Result is a validated decision, in the shape opa-envoy-plugin turns into
// a CheckResponse. Fields that apply only to an allow (RequestHeadersToRemove,
// ResponseHeadersToAdd, QueryParameters*) are read only when Allowed, and
// Body and HTTPStatus only when not, exactly like opa-envoy-plugin.
type Result struct {
	// Allowed is the decision.
	Allowed bool
	// Decision is the raw value the query returned: a bool, or a
	// map[string]any with json.Number numbers.
	Decision any
	// Headers go to the upstream on allow, to the client on deny.
	Headers []Header
	// RequestHeadersToRemove are removed from the request on allow.
	RequestHeadersToRemove []string
	// ResponseHeadersToAdd are added to the upstream's response on allow.
	ResponseHeadersToAdd []Header
	// QueryParametersToSet and QueryParametersToRemove rewrite the
	// request's query on allow.
	QueryParametersToSet    []Header
	QueryParametersToRemove []string
	// Body is the deny response body; HasBody tells an empty body from none.
	Body    string
	HasBody bool
	// HTTPStatus is the deny status; 0 when the decision sets none (then
	// the deny is 403, like opa-envoy-plugin).
	HTTPStatus int
	// DynamicMetadata is set on the CheckResponse (object decisions only).
	DynamicMetadata *structpb.Struct
}

// Header is one header or query parameter: a key and one value. A key
// listed with several values in the decision appears once per value.
type Header struct {
	Key, Value string
}

// decisionToResult validates a decision like opa-envoy-plugin's
// envoyauth.EvalResult and its server's Check. Errors wrap ErrInvalidDecision.
func decisionToResult(d any) (*Result, error) {
	switch d := d.(type) {
	case bool:
		return &Result{Allowed: d, Decision: d}, nil
	case map[string]any:
		return objectResult(d)
	}
	return nil, fmt.Errorf("%w: illegal value for policy evaluation result: %T", ErrInvalidDecision, d)
}

func objectResult(d map[string]any) (*Result, error) {
	v, ok := d["allowed"]
	if !ok {
		return nil, fmt.Errorf("%w: missing \"allowed\" key", ErrInvalidDecision)
	}
	allowed, ok := v.(bool)
	if !ok {
		return nil, fmt.Errorf("%w: expected allowed to be of type 'boolean' but got '%T'", ErrInvalidDecision, v)
	}
	r := &Result{Allowed: allowed, Decision: d}
	var err error
	if r.Headers, err = headersField(d, "headers"); err != nil {
		return nil, err
	}
	if v, ok := d["dynamic_metadata"]; ok {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: expected dynamic_metadata to be of type 'object' but got '%T'", ErrInvalidDecision, v)
		}
		if r.DynamicMetadata, err = structpb.NewStruct(jsonNumbersToFloats(m).(map[string]any)); err != nil {
			return nil, fmt.Errorf("%w: dynamic_metadata: %w", ErrInvalidDecision, err)
		}
	}
	if allowed {
		if r.RequestHeadersToRemove, err = stringsField(d, "request_headers_to_remove"); err != nil {
			return nil, err
		}
		if r.ResponseHeadersToAdd, err = headersField(d, "response_headers_to_add"); err != nil {
			return nil, err
		}
		if r.QueryParametersToSet, err = queryToSet(d); err != nil {
			return nil, err
		}
		if r.QueryParametersToRemove, err = stringsField(d, "query_parameters_to_remove"); err != nil {
			return nil, err
		}
		return r, nil
	}
	if v, ok := d["body"]; ok {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%w: expected body to be of type 'string' but got '%T'", ErrInvalidDecision, v)
		}
		r.Body, r.HasBody = s, true
	}
	if v, ok := d["http_status"]; ok {
		n, ok := v.(json.Number)
		if !ok {
			return nil, fmt.Errorf("%w: expected http_status to be of type 'number' but got '%T'", ErrInvalidDecision, v)
		}
		code, err := n.Int64()
		if err != nil {
			return nil, fmt.Errorf("%w: http_status: %w", ErrInvalidDecision, err)
		}
		if code < 100 || code > 999 || http.StatusText(int(code)) == "" {
			return nil, fmt.Errorf("%w: invalid HTTP status code %v", ErrInvalidDecision, code)
		}
		if _, ok := typev3.StatusCode_name[int32(code)]; !ok {
			return nil, fmt.Errorf("%w: invalid HTTP status code %v", ErrInvalidDecision, code)
		}
		r.HTTPStatus = int(code)
	}
	return r, nil
}

func stringsField(d map[string]any, name string) ([]string, error) {
	v, ok := d[name]
	if !ok {
		return nil, nil
	}
	switch v := v.(type) {
	case []string:
		return v, nil
	case []any:
		out := make([]string, len(v))
		for i, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("%w: expected %s value to be of type 'string' but got '%T'", ErrInvalidDecision, name, x)
			}
			out[i] = s
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: expected %s to be of type '[]string' but got '%T'", ErrInvalidDecision, name, v)
}

// headersField reads an object of headers, or a list of such objects;
// a header's value is a string or a list of strings.
func headersField(d map[string]any, name string) ([]Header, error) {
	v, ok := d[name]
	if !ok {
		return nil, nil
	}
	var out []Header
	add := func(m map[string]any) error {
		for _, k := range sortedKeys(m) {
			switch val := m[k].(type) {
			case string:
				out = append(out, Header{k, val})
			case []any:
				for _, x := range val {
					s, ok := x.(string)
					if !ok {
						return fmt.Errorf("%w: %s: invalid value type %T for header '%s'", ErrInvalidDecision, name, x, k)
					}
					out = append(out, Header{k, s})
				}
			default:
				return fmt.Errorf("%w: %s: type assertion error for header '%s'", ErrInvalidDecision, name, k)
			}
		}
		return nil
	}
	switch v := v.(type) {
	case map[string]any:
		if err := add(v); err != nil {
			return nil, err
		}
	case []any:
		for _, x := range v {
			m, ok := x.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%w: expected %s to be of type 'object' but got '%T'", ErrInvalidDecision, name, x)
			}
			if err := add(m); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("%w: expected %s to be of type 'object' but got '%T'", ErrInvalidDecision, name, v)
	}
	return out, nil
}

func queryToSet(d map[string]any) ([]Header, error) {
	v, ok := d["query_parameters_to_set"]
	if !ok {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: expected query_parameters_to_set to be a map but got '%T'", ErrInvalidDecision, v)
	}
	var out []Header
	for _, k := range sortedKeys(m) {
		switch val := m[k].(type) {
		case string:
			out = append(out, Header{k, val})
		case []any:
			for _, x := range val {
				s, ok := x.(string)
				if !ok {
					return nil, fmt.Errorf("%w: query_parameters_to_set: expected array element to be string but got '%T'", ErrInvalidDecision, x)
				}
				out = append(out, Header{k, s})
			}
		default:
			return nil, fmt.Errorf("%w: query_parameters_to_set: expected value to be string or array but got '%T'", ErrInvalidDecision, val)
		}
	}
	return out, nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// jsonNumbersToFloats prepares a decoded JSON value for structpb, which
// knows float64 but not json.Number.
func jsonNumbersToFloats(x any) any {
	switch x := x.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return x.String()
		}
		return f
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, v := range x {
			out[k] = jsonNumbersToFloats(v)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, v := range x {
			out[i] = jsonNumbersToFloats(v)
		}
		return out
	}
	return x
}

// OkHttpResponse returns the OK response parts of an allow, as
// opa-envoy-plugin sets them (nil for a boolean decision).
func (r *Result) OkHttpResponse() *authv3.OkHttpResponse {
	if _, ok := r.Decision.(map[string]any); !ok {
		return nil
	}
	ok := &authv3.OkHttpResponse{
		Headers:                 headerOptions(r.Headers),
		HeadersToRemove:         r.RequestHeadersToRemove,
		ResponseHeadersToAdd:    headerOptions(r.ResponseHeadersToAdd),
		QueryParametersToRemove: r.QueryParametersToRemove,
	}
	for _, q := range r.QueryParametersToSet {
		ok.QueryParametersToSet = append(ok.QueryParametersToSet, &corev3.QueryParameter{Key: q.Key, Value: q.Value})
	}
	return ok
}

// DeniedHttpResponse returns the denied response of a deny: the decision's
// status (403 when none), body and headers.
func (r *Result) DeniedHttpResponse() *authv3.DeniedHttpResponse {
	code := r.HTTPStatus
	if code == 0 {
		code = http.StatusForbidden
	}
	return &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(code)},
		Headers: headerOptions(r.Headers),
		Body:    r.Body,
	}
}

func headerOptions(hs []Header) []*corev3.HeaderValueOption {
	if len(hs) == 0 {
		return nil
	}
	out := make([]*corev3.HeaderValueOption, len(hs))
	for i, h := range hs {
		out[i] = &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.Key, Value: h.Value}}
	}
	return out
}
