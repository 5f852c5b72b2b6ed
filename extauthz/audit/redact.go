package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"regexp"
	"strconv"
	"strings"
)

// HMACPrefix starts every redacted value.
const HMACPrefix = "hmac-sha256:"

// alwaysRedactedHeaders carry credentials: they are redacted whatever the
// configuration says.
var alwaysRedactedHeaders = []string{
	"authorization", "proxy-authorization", "cookie", "set-cookie",
	"x-api-key", "api-key", "x-auth-token", "x-vault-token",
	"x-amz-security-token", "x-forwarded-client-cert",
}

// secretPatterns find credentials inside free text (header values, claim
// and body strings, event messages and details). Each match is replaced by
// its HMAC.
var secretPatterns = []*regexp.Regexp{
	// A PEM private key block, or its start when the block is cut short.
	regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)`),
	// An HTTP credential: the scheme and its value.
	regexp.MustCompile(`(?i)\b(?:bearer|basic|negotiate)\s+[A-Za-z0-9\-._~+/]{8,}=*`),
	regexp.MustCompile(`(?i)\btoken[:=]?\s+[A-Za-z0-9\-._~+/]{16,}=*`),
	// key=value credentials in text.
	regexp.MustCompile(`(?i)\b(?:password|passwd|secret|client_secret|api[_-]?key|access[_-]?key|private[_-]?key)["']?\s*[:=]\s*["']?[^\s"',;&]+`),
	// Vault tokens: service, batch and recovery (hvs., hvb., hvr.), and
	// the legacy s./b. form.
	regexp.MustCompile(`\bhv[sbr]\.[A-Za-z0-9_\-]{20,}`),
	regexp.MustCompile(`\b[sb]\.[A-Za-z0-9]{24}\b`),
	// A JWT (its header starts with {" base64url-encoded).
	regexp.MustCompile(`\beyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*)?`),
}

// markers are cheap case-insensitive tests that let most strings skip the
// patterns: every pattern's match contains one of them.
var markers = []string{"private key", "bearer", "basic", "negotiate", "token", "passw", "secret",
	"key", "hvs.", "hvb.", "hvr.", "s.", "b.", "eyj"}

// containsFold reports whether s contains the lowercase ASCII marker m,
// ignoring case.
func containsFold(s, m string) bool {
	for i := 0; i+len(m) <= len(s); i++ {
		c := s[i]
		if c|0x20 != m[0] && c != m[0] {
			continue
		}
		if strings.EqualFold(s[i:i+len(m)], m) {
			return true
		}
	}
	return false
}

// sensitiveNames are parts of header, claim and detail names whose values
// are digested whole, whatever they look like.
var sensitiveNames = []string{"token", "secret", "password", "passwd", "credential",
	"authorization", "api-key", "api_key", "apikey", "private", "cookie", "session"}

func sensitiveName(k string) bool {
	for _, m := range sensitiveNames {
		if containsFold(k, m) {
			return true
		}
	}
	return false
}

// redactor applies the Redaction configuration to records.
type redactor struct {
	key          []byte
	headers      map[string]bool
	claims       map[string]bool
	bodyPaths    [][]string
	includeQuery bool
	includeBody  bool
	mac          hash.Hash // used by the writer goroutine only
	scratch      []byte
}

func newRedactor(c *Config, key []byte) *redactor {
	r := &redactor{
		key:          key,
		headers:      map[string]bool{},
		claims:       map[string]bool{},
		includeQuery: c.IncludeQuery,
		includeBody:  c.IncludeBody,
		mac:          hmac.New(sha256.New, key),
	}
	for _, h := range alwaysRedactedHeaders {
		r.headers[h] = true
	}
	for _, h := range c.Redaction.Headers {
		r.headers[strings.ToLower(h)] = true
	}
	for _, cl := range c.Redaction.Claims {
		r.claims[cl] = true
	}
	for _, p := range c.Redaction.BodyPaths {
		if toks, err := parsePointer(p); err == nil {
			r.bodyPaths = append(r.bodyPaths, toks)
		}
	}
	return r
}

// sum is the redacted form of s.
func (r *redactor) sum(s string) string {
	r.mac.Reset()
	r.scratch = append(r.scratch[:0], s...)
	r.mac.Write(r.scratch)
	var d [sha256.Size]byte
	var out [len(HMACPrefix) + 2*sha256.Size]byte
	copy(out[:], HMACPrefix)
	hex.Encode(out[len(HMACPrefix):], r.mac.Sum(d[:0]))
	return string(out[:])
}

// sumValue redacts any JSON value: strings by their text, others by their
// JSON encoding.
func (r *redactor) sumValue(v any) string {
	if s, ok := v.(string); ok {
		return r.sum(s)
	}
	b, err := appendValue(r.scratch[:0], v, 0)
	if err != nil {
		return r.sum(fmt.Sprint(v))
	}
	return r.sum(string(b))
}

// minSecret is shorter than any credential the patterns find.
const minSecret = 10

// scrub replaces every credential found in s by its HMAC.
func (r *redactor) scrub(s string) string {
	if len(s) < minSecret {
		return s
	}
	hit := false
	for _, m := range markers {
		if containsFold(s, m) {
			hit = true
			break
		}
	}
	if !hit {
		return s
	}
	for _, re := range secretPatterns {
		s = re.ReplaceAllStringFunc(s, r.sum)
	}
	return s
}

// apply rewrites rec in place (the logger owns it) so that it holds no
// configured value and no credential in clear.
func (r *redactor) apply(rec *Record) {
	if !r.includeQuery {
		rec.Query = ""
		if i := strings.IndexByte(rec.Path, '?'); i >= 0 {
			rec.Path = rec.Path[:i]
		}
	}
	rec.Path = r.scrub(rec.Path)
	rec.Query = r.scrub(rec.Query)
	if len(rec.Headers) > 0 {
		h := make(map[string]string, len(rec.Headers))
		for k, v := range rec.Headers {
			if r.headers[strings.ToLower(k)] || sensitiveName(k) {
				h[k] = r.sum(v)
			} else {
				h[k] = r.scrub(v)
			}
		}
		rec.Headers = h
	}
	if r.claims["sub"] && rec.Subject != "" {
		rec.Subject = r.sum(rec.Subject)
	}
	if len(rec.Claims) > 0 {
		c := make(map[string]any, len(rec.Claims))
		for k, v := range rec.Claims {
			if r.claims[k] || sensitiveName(k) {
				c[k] = r.sumValue(v)
			} else {
				c[k] = r.scrubAny(v, 0)
			}
		}
		rec.Claims = c
	}
	if !r.includeBody {
		rec.Body = nil
	} else if rec.Body != nil {
		b := copyJSON(rec.Body, 0)
		for _, p := range r.bodyPaths {
			b = r.redactPointer(b, p)
		}
		rec.Body = r.scrubAny(b, 0)
	}
	if len(rec.Detail) > 0 {
		d := make(map[string]string, len(rec.Detail))
		for k, v := range rec.Detail {
			if sensitiveName(k) {
				d[k] = r.sum(v)
			} else {
				d[k] = r.scrub(v)
			}
		}
		rec.Detail = d
	}
	rec.Message = r.scrub(rec.Message)
	rec.Reason = r.scrub(rec.Reason)
}

// maxDepth bounds the walk of nested values; deeper values are redacted whole.
const maxDepth = 64

// scrubAny scrubs every string inside a JSON-like value, returning a copy
// where anything changed.
func (r *redactor) scrubAny(v any, depth int) any {
	if depth > maxDepth {
		return r.sumValue(v)
	}
	switch t := v.(type) {
	case string:
		return r.scrub(t)
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[r.scrub(k)] = r.scrubAny(e, depth+1)
		}
		return m
	case []any:
		s := make([]any, len(t))
		for i, e := range t {
			s[i] = r.scrubAny(e, depth+1)
		}
		return s
	case []string:
		s := make([]string, len(t))
		for i, e := range t {
			s[i] = r.scrub(e)
		}
		return s
	default:
		return v
	}
}

// copyJSON copies maps and slices so that redaction never writes into the
// caller's body.
func copyJSON(v any, depth int) any {
	if depth > maxDepth {
		return v
	}
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[k] = copyJSON(e, depth+1)
		}
		return m
	case []any:
		s := make([]any, len(t))
		for i, e := range t {
			s[i] = copyJSON(e, depth+1)
		}
		return s
	default:
		return v
	}
}

// redactPointer replaces the value at pointer toks (if present) by its HMAC.
// An empty pointer is the whole body.
func (r *redactor) redactPointer(v any, toks []string) any {
	if len(toks) == 0 {
		return r.sumValue(v)
	}
	switch t := v.(type) {
	case map[string]any:
		if e, ok := t[toks[0]]; ok {
			t[toks[0]] = r.redactPointer(e, toks[1:])
		}
	case []any:
		i, err := strconv.Atoi(toks[0])
		if err == nil && i >= 0 && i < len(t) && strconv.Itoa(i) == toks[0] {
			t[i] = r.redactPointer(t[i], toks[1:])
		}
	}
	return v
}

// parsePointer splits a JSON pointer (RFC 6901) into unescaped tokens.
func parsePointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if p[0] != '/' {
		return nil, fmt.Errorf("%q is not a JSON pointer: must start with /", p)
	}
	parts := strings.Split(p[1:], "/")
	for i, s := range parts {
		for j := 0; j < len(s); j++ {
			if s[j] == '~' && (j+1 == len(s) || (s[j+1] != '0' && s[j+1] != '1')) {
				return nil, errors.New("invalid ~ escape in JSON pointer " + strconv.Quote(p))
			}
		}
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
	}
	return parts, nil
}
