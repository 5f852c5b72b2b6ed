package body

import (
	"mime"
	"strings"
)

// Problem is a request body meshward refuses: the HTTP status of the deny,
// a stable machine-readable code for the JSON error body, and a message
// for the sender.
type Problem struct {
	Status  int
	Code    string
	Message string
}

func (p *Problem) Error() string { return p.Code + ": " + p.Message }

// Codes of Problem, with their HTTP status.
const (
	// CodeUnsupportedMediaType (415): content-type is missing or not JSON.
	CodeUnsupportedMediaType = "unsupported_media_type"
	// CodeUnsupportedEncoding (415): content-encoding is set and not identity.
	CodeUnsupportedEncoding = "unsupported_content_encoding"
	// CodePartialBody (413): Envoy buffered only part of the body.
	CodePartialBody = "partial_body"
	// CodeInvalidJSON (400): the body is not strict JSON (see Decode).
	CodeInvalidJSON = "invalid_json"
	// CodeBodyTooLarge (400): the body is longer than Limits.MaxBytes.
	CodeBodyTooLarge = "body_too_large"
)

// Headers are the request headers that decide whether a body can be
// checked at all. Values are as Envoy sends them (a repeated header
// arrives comma-joined); empty means absent.
type Headers struct {
	ContentType     string // content-type
	ContentEncoding string // content-encoding
	PartialBody     string // x-envoy-auth-partial-body
}

// Header names CheckHeaders reads, lowercase as Envoy sends them.
const (
	HeaderContentType     = "content-type"
	HeaderContentEncoding = "content-encoding"
	HeaderPartialBody     = "x-envoy-auth-partial-body"
)

// HeadersFrom picks the headers CheckHeaders needs with get, e.g.
// func(n string) string { return httpReq.GetHeaders()[n] }.
func HeadersFrom(get func(name string) string) Headers {
	return Headers{
		ContentType:     get(HeaderContentType),
		ContentEncoding: get(HeaderContentEncoding),
		PartialBody:     get(HeaderPartialBody),
	}
}

// CheckHeaders says whether a body with these headers may be decoded and
// validated; nil means yes. In order:
//   - x-envoy-auth-partial-body anything but absent or "false": 413
//     partial_body (Envoy cut the body at max_request_bytes; validating a
//     prefix would judge a message the backend never sees);
//   - content-encoding anything but absent or "identity": 415
//     unsupported_content_encoding (meshward never inflates);
//   - content-type absent, unparsable, with a charset other than utf-8,
//     or not application/json or application/*+json: 415
//     unsupported_media_type.
func CheckHeaders(h Headers) *Problem {
	if p := strings.TrimSpace(h.PartialBody); p != "" && !strings.EqualFold(p, "false") {
		return &Problem{Status: 413, Code: CodePartialBody,
			Message: "the request body was cut at the proxy's buffer limit; send a smaller body"}
	}
	if e := strings.TrimSpace(h.ContentEncoding); e != "" && !strings.EqualFold(e, "identity") {
		return &Problem{Status: 415, Code: CodeUnsupportedEncoding,
			Message: "content-encoding " + quoteShort(e) + " is not accepted; send the body unencoded"}
	}
	if h.ContentType == "application/json" {
		return nil // the common case, without parsing
	}
	if h.ContentType == "" {
		return &Problem{Status: 415, Code: CodeUnsupportedMediaType,
			Message: "content-type is missing; want application/json"}
	}
	mt, params, err := mime.ParseMediaType(h.ContentType)
	if err != nil {
		return &Problem{Status: 415, Code: CodeUnsupportedMediaType,
			Message: "content-type " + quoteShort(h.ContentType) + " is not a valid media type; want application/json"}
	}
	if !isJSONMediaType(mt) {
		return &Problem{Status: 415, Code: CodeUnsupportedMediaType,
			Message: "content-type " + quoteShort(mt) + " is not JSON; want application/json or application/*+json"}
	}
	if k := Classify(h.ContentType); k != MediaJSON && k != MediaOther {
		// application/x-www-form-urlencoded+json and the like: the Rego
		// input (like opa-envoy-plugin) and many backends read them as
		// a form, so validating them as JSON would judge another message.
		return &Problem{Status: 415, Code: CodeUnsupportedMediaType,
			Message: "content-type " + quoteShort(mt) + " is ambiguous (JSON by its suffix, " + k.String() + " by its name); want application/json"}
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return &Problem{Status: 415, Code: CodeUnsupportedMediaType,
			Message: "charset " + quoteShort(cs) + " is not accepted; JSON is utf-8"}
	}
	return nil
}

// isJSONMediaType: mt is lowercase (mime.ParseMediaType lowers it).
func isJSONMediaType(mt string) bool {
	if mt == "application/json" {
		return true
	}
	sub, ok := strings.CutPrefix(mt, "application/")
	if !ok {
		return false
	}
	name, ok := strings.CutSuffix(sub, "+json")
	return ok && name != "" && !strings.ContainsAny(name, "/+")
}

// MediaKind is what a body is by its content-type, the way opa-envoy-plugin
// decides how to parse it (and so the way the Rego input reads it).
type MediaKind uint8

// The kinds, in the order opa-envoy-plugin tests for them.
const (
	// MediaOther: none of the below; the Rego input's parsed_body is null.
	MediaOther MediaKind = iota
	// MediaJSON: the content-type contains application/json.
	MediaJSON
	// MediaGRPC: it contains application/grpc.
	MediaGRPC
	// MediaForm: it contains application/x-www-form-urlencoded.
	MediaForm
	// MediaMultipart: it contains multipart/form-data.
	MediaMultipart
)

func (k MediaKind) String() string {
	switch k {
	case MediaJSON:
		return "JSON"
	case MediaGRPC:
		return "gRPC"
	case MediaForm:
		return "a form"
	case MediaMultipart:
		return "multipart"
	}
	return "other"
}

// Classify returns the kind of a body with content-type ct, exactly as
// opa-envoy-plugin's getParsedBody decides it: substring tests, first
// match wins. It is the one classification both the Rego input and the
// schema step (CheckHeaders refuses a JSON media type of another kind)
// rely on.
func Classify(ct string) MediaKind {
	switch {
	case strings.Contains(ct, "application/json"):
		return MediaJSON
	case strings.Contains(ct, "application/grpc"):
		return MediaGRPC
	case strings.Contains(ct, "application/x-www-form-urlencoded"):
		return MediaForm
	case strings.Contains(ct, "multipart/form-data"):
		return MediaMultipart
	}
	return MediaOther
}
