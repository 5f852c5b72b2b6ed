package body

import "testing"

// TestCheckHeaders covers SECURITY.md's rows on partial bodies (413),
// missing or non-JSON content types (415) and content encodings (415).
func TestCheckHeaders(t *testing.T) {
	tests := []struct {
		name   string
		h      Headers
		status int // 0: accepted
		code   string
	}{
		{"json", Headers{ContentType: "application/json"}, 0, ""},
		{"json with charset", Headers{ContentType: "application/json; charset=utf-8"}, 0, ""},
		{"json with charset UTF8 and other params", Headers{ContentType: "Application/JSON; Charset=\"UTF-8\"; profile=x"}, 0, ""},
		{"+json suffix", Headers{ContentType: "application/vnd.meshward.task+json"}, 0, ""},
		{"problem+json", Headers{ContentType: "application/problem+json"}, 0, ""},
		{"identity encoding", Headers{ContentType: "application/json", ContentEncoding: "identity"}, 0, ""},
		{"partial body false", Headers{ContentType: "application/json", PartialBody: "false"}, 0, ""},

		{"partial body", Headers{ContentType: "application/json", PartialBody: "true"}, 413, CodePartialBody},
		{"partial body, odd value", Headers{ContentType: "application/json", PartialBody: "1"}, 413, CodePartialBody},
		{"partial body, repeated", Headers{ContentType: "application/json", PartialBody: "false,true"}, 413, CodePartialBody},
		{"partial body wins over a bad type", Headers{ContentType: "text/plain", PartialBody: "true"}, 413, CodePartialBody},
		{"gzip", Headers{ContentType: "application/json", ContentEncoding: "gzip"}, 415, CodeUnsupportedEncoding},
		{"zstd", Headers{ContentType: "application/json", ContentEncoding: "zstd"}, 415, CodeUnsupportedEncoding},
		{"identity then gzip", Headers{ContentType: "application/json", ContentEncoding: "identity, gzip"}, 415, CodeUnsupportedEncoding},
		{"missing content type", Headers{}, 415, CodeUnsupportedMediaType},
		{"text/plain", Headers{ContentType: "text/plain"}, 415, CodeUnsupportedMediaType},
		{"text/json", Headers{ContentType: "text/json"}, 415, CodeUnsupportedMediaType},
		{"form", Headers{ContentType: "application/x-www-form-urlencoded"}, 415, CodeUnsupportedMediaType},
		{"json prefix only", Headers{ContentType: "application/jsonx"}, 415, CodeUnsupportedMediaType},
		{"bare +json", Headers{ContentType: "application/+json"}, 415, CodeUnsupportedMediaType},
		{"repeated, comma-joined", Headers{ContentType: "application/json, text/plain"}, 415, CodeUnsupportedMediaType},
		{"utf-16", Headers{ContentType: "application/json; charset=utf-16"}, 415, CodeUnsupportedMediaType},
		{"duplicate params", Headers{ContentType: "application/json; charset=utf-8; charset=latin1"}, 415, CodeUnsupportedMediaType},
		{"unparsable", Headers{ContentType: "application/json;;"}, 415, CodeUnsupportedMediaType},
		{"form by name, JSON by suffix", Headers{ContentType: "application/x-www-form-urlencoded+json"}, 415, CodeUnsupportedMediaType},
		{"gRPC by name, JSON by suffix", Headers{ContentType: "application/grpc+json"}, 415, CodeUnsupportedMediaType},
		{"multipart in a parameter", Headers{ContentType: "application/vnd.x+json; note=multipart/form-data"}, 415, CodeUnsupportedMediaType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := CheckHeaders(tt.h)
			switch {
			case tt.status == 0 && p != nil:
				t.Fatalf("CheckHeaders(%+v) = %+v, want accepted", tt.h, p)
			case tt.status == 0:
			case p == nil:
				t.Fatalf("CheckHeaders(%+v) accepted, want %d %s", tt.h, tt.status, tt.code)
			case p.Status != tt.status || p.Code != tt.code || p.Message == "":
				t.Fatalf("CheckHeaders(%+v) = %+v, want %d %s", tt.h, p, tt.status, tt.code)
			}
		})
	}
}

func TestHeadersFrom(t *testing.T) {
	m := map[string]string{"content-type": "application/json", "content-encoding": "gzip", "x-envoy-auth-partial-body": "true"}
	got := HeadersFrom(func(n string) string { return m[n] })
	want := Headers{ContentType: "application/json", ContentEncoding: "gzip", PartialBody: "true"}
	if got != want {
		t.Errorf("HeadersFrom = %+v, want %+v", got, want)
	}
}

// TestClassify: opa-envoy-plugin's substring tests, first match wins.
func TestClassify(t *testing.T) {
	for ct, want := range map[string]MediaKind{
		"application/json":                       MediaJSON,
		"text/plain; x=application/json":         MediaJSON,
		"application/jsonp":                      MediaJSON,
		"application/problem+json":               MediaOther,
		"application/grpc":                       MediaGRPC,
		"application/grpc+json":                  MediaGRPC,
		"application/x-www-form-urlencoded":      MediaForm,
		"application/x-www-form-urlencoded+json": MediaForm,
		"multipart/form-data; boundary=b":        MediaMultipart,
		"application/json; multipart/form-data":  MediaJSON,
		"":                                       MediaOther,
	} {
		if got := Classify(ct); got != want {
			t.Errorf("Classify(%q) = %v, want %v", ct, got, want)
		}
	}
}
