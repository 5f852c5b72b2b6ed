package body

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDecodeAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want any
	}{
		{"object", `{"a":1,"b":[true,false,null],"c":"x"}`, map[string]any{
			"a": json.Number("1"), "b": []any{true, false, nil}, "c": "x"}},
		{"scalar top level", ` "hi" `, "hi"},
		{"empty object and array", `{"o":{},"a":[]}`, map[string]any{"o": map[string]any{}, "a": []any{}}},
		{"whitespace everywhere", " \t\r\n{ \"a\" : [ 1 , 2 ] }\n", map[string]any{"a": []any{json.Number("1"), json.Number("2")}}},
		{"big integer stays exact", `{"id":12345678901234567890123}`, map[string]any{"id": json.Number("12345678901234567890123")}},
		{"2^53+1 stays exact", `9007199254740993`, json.Number("9007199254740993")},
		{"numbers", `[0,-0,1.5,-2e10,3E+2,4e-2,0.0]`, []any{json.Number("0"), json.Number("-0"), json.Number("1.5"),
			json.Number("-2e10"), json.Number("3E+2"), json.Number("4e-2"), json.Number("0.0")}},
		{"escapes", `"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00"`, "a\"b\\c/d\b\f\n\r\t\u00e9\U0001F600"},
		{"utf-8", `{"name":"Zoë 😀"}`, map[string]any{"name": "Zoë 😀"}},
		{"same key in different objects", `{"a":{"x":1},"b":{"x":2}}`, map[string]any{
			"a": map[string]any{"x": json.Number("1")}, "b": map[string]any{"x": json.Number("2")}}},
		{"keys differing in more than case", `{"role":"user","roles":"admin"}`, map[string]any{"role": "user", "roles": "admin"}},
		{"escaped key", `{"r\u00f4le":1}`, map[string]any{"rôle": json.Number("1")}},
		{"depth 64", strings.Repeat("[", 64) + strings.Repeat("]", 64), nest(64)},
		{"10000 values", "[" + strings.Repeat("0,", DefaultMaxValues-2) + "0]", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.in), Limits{})
			if err != nil {
				t.Fatalf("Decode(%q): %v", tt.in, err)
			}
			if tt.want != nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decode(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func nest(n int) any {
	var v any = []any{}
	for range n - 1 {
		v = []any{v}
	}
	return v
}

// TestDecodeRejects covers SECURITY.md's body rows: malformed JSON and
// invalid UTF-8 (400 with the position), duplicate and case-variant keys
// (400), nesting over the limit (400), and the size limit.
func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		lim      Limits
		kind     Kind
		offset   int
		line     int
		column   int
		msgMatch string
	}{
		{"duplicate key", `{"role":"user","role":"admin"}`, Limits{}, KindDuplicateKey, 15, 1, 16, `duplicate key "role"`},
		{"duplicate key via escape", `{"role":"user","r\u006fle":"admin"}`, Limits{}, KindDuplicateKey, 15, 1, 16, `duplicate key "role"`},
		{"case-variant key", `{"role":"user","Role":"admin"}`, Limits{}, KindCaseVariantKey, 15, 1, 16, `differ only in case`},
		{"case-variant key, Kelvin sign", "{\"k\":1,\"\u212a\":2}", Limits{}, KindCaseVariantKey, 7, 1, 8, `differ only in case`},
		{"duplicate key nested", "{\"a\":\n {\"x\":1,\"x\":2}}", Limits{}, KindDuplicateKey, 14, 2, 9, `duplicate key "x"`},
		{"duplicate key in a large object", bigObject(40, `"k7"`), Limits{}, KindDuplicateKey, 0, 0, 0, `duplicate key "k7"`},
		{"case-variant key in a large object", bigObject(40, `"K7"`), Limits{}, KindCaseVariantKey, 0, 0, 0, `differs only in case`},
		{"invalid UTF-8", "{\"a\":\"x\xff\"}", Limits{}, KindInvalidUTF8, 7, 1, 8, "invalid UTF-8"},
		{"invalid UTF-8 after an escape", "{\"a\":\"\\n\xc3\x28\"}", Limits{}, KindInvalidUTF8, 8, 1, 9, "invalid UTF-8"},
		{"invalid UTF-8 in a key", "{\"\xed\xa0\x80\":1}", Limits{}, KindInvalidUTF8, 2, 1, 3, "invalid UTF-8"},
		{"lone high surrogate", `"\ud800"`, Limits{}, KindInvalidUTF8, 1, 1, 2, "lone surrogate"},
		{"lone low surrogate", `"\udc00x"`, Limits{}, KindInvalidUTF8, 1, 1, 2, "lone surrogate"},
		{"high surrogate then non-low", `"\ud800\u0041"`, Limits{}, KindInvalidUTF8, 1, 1, 2, "lone surrogate"},
		{"too deep", strings.Repeat("[", 65) + strings.Repeat("]", 65), Limits{}, KindTooDeep, 64, 1, 65, "deeper than the limit of 64"},
		{"too deep, configured", `{"a":{"b":{}}}`, Limits{MaxDepth: 2}, KindTooDeep, 10, 1, 11, "limit of 2"},
		{"depth capped at 1000", strings.Repeat("[", 1001) + strings.Repeat("]", 1001), Limits{MaxDepth: 5000}, KindTooDeep, 1000, 1, 1001, "limit of 1000"},
		{"too large", `{"a":"0123456789"}`, Limits{MaxBytes: 10}, KindTooLarge, 10, 1, 11, "more than the limit of 10"},
		{"too many values", `[1,[2,3],{"a":4}]`, Limits{MaxValues: 6}, KindTooManyValues, 14, 1, 15, "more JSON values than the limit of 6"},
		{"too many values by default", "[" + strings.Repeat("0,", DefaultMaxValues-1) + "0]", Limits{}, KindTooManyValues, 0, 0, 0, "limit of 10000"},
		{"empty", ``, Limits{}, KindSyntax, 0, 1, 1, "empty body"},
		{"only whitespace", " \n ", Limits{}, KindSyntax, 3, 2, 2, "empty body"},
		{"trailing data", `{} {}`, Limits{}, KindSyntax, 3, 1, 4, "data after"},
		{"trailing comma object", `{"a":1,}`, Limits{}, KindSyntax, 7, 1, 8, "want a string key"},
		{"trailing comma array", `[1,]`, Limits{}, KindSyntax, 3, 1, 4, "want a value"},
		{"single quotes", `{'a':1}`, Limits{}, KindSyntax, 1, 1, 2, "want a string key"},
		{"unquoted key", `{a:1}`, Limits{}, KindSyntax, 1, 1, 2, "want a string key"},
		{"missing colon", `{"a" 1}`, Limits{}, KindSyntax, 5, 1, 6, "want ':'"},
		{"leading zero", `[01]`, Limits{}, KindSyntax, 2, 1, 3, "leading zero"},
		{"leading plus", `+1`, Limits{}, KindSyntax, 0, 1, 1, "want a value"},
		{"bare dot", `1.`, Limits{}, KindSyntax, 2, 1, 3, "after '.'"},
		{"empty exponent", `1e`, Limits{}, KindSyntax, 2, 1, 3, "exponent"},
		{"NaN", `NaN`, Limits{}, KindSyntax, 0, 1, 1, "want a value"},
		{"Infinity", `-Infinity`, Limits{}, KindSyntax, 1, 1, 2, "want a digit"},
		{"bad literal", `tru`, Limits{}, KindSyntax, 0, 1, 1, "want true"},
		{"comment", `{"a":1 /* x */}`, Limits{}, KindSyntax, 7, 1, 8, "want ',' or '}'"},
		{"control char in string", "\"a\tb\"", Limits{}, KindSyntax, 2, 1, 3, "control character"},
		{"bad escape", `"\x41"`, Limits{}, KindSyntax, 1, 1, 2, "invalid escape"},
		{"short unicode escape", `"\u12"`, Limits{}, KindSyntax, 1, 1, 2, `\u escape`},
		{"unterminated string", `{"a":"abc`, Limits{}, KindSyntax, 9, 1, 10, "end of body in a string"},
		{"unterminated object", `{"a":1`, Limits{}, KindSyntax, 6, 1, 7, "end of body"},
		{"byte order mark", "\uFEFF{}", Limits{}, KindSyntax, 0, 1, 1, "byte order mark"},
		{"NUL", "{\"a\":1}\x00", Limits{}, KindSyntax, 7, 1, 8, "data after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := Decode([]byte(tt.in), tt.lim)
			if err == nil {
				t.Fatalf("Decode(%q) = %#v, want an error", tt.in, v)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode(%q) error %T %v, want *Error", tt.in, err, err)
			}
			if e.Kind != tt.kind {
				t.Errorf("kind = %v, want %v (%v)", e.Kind, tt.kind, err)
			}
			if tt.line != 0 && (e.Offset != tt.offset || e.Line != tt.line || e.Column != tt.column) {
				t.Errorf("at byte %d line %d column %d, want byte %d line %d column %d (%v)",
					e.Offset, e.Line, e.Column, tt.offset, tt.line, tt.column, err)
			}
			if !strings.Contains(err.Error(), tt.msgMatch) {
				t.Errorf("error %q does not say %q", err, tt.msgMatch)
			}
			p := e.Problem()
			wantCode := CodeInvalidJSON
			if tt.kind == KindTooLarge || tt.kind == KindTooManyValues {
				wantCode = CodeBodyTooLarge
			}
			if p.Status != 400 || p.Code != wantCode || p.Message != err.Error() {
				t.Errorf("Problem() = %+v, want 400 %s", p, wantCode)
			}
		})
	}
}

// bigObject is an object with n keys k0..k(n-1), then one more key extra.
func bigObject(n int, extra string) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		b.WriteString(`"k` + strconv.Itoa(i) + `":1,`)
	}
	b.WriteString(extra + ":2}")
	return b.String()
}

func TestFoldKeyMatchesEqualFold(t *testing.T) {
	pairs := [][2]string{
		{"role", "ROLE"}, {"k", "\u212a"}, {"s", "\u017f"}, {"ß", "ẞ"}, {"σ", "ς"}, {"Σ", "ς"},
		{"abc", "abd"}, {"a", "aa"}, {"ǅ", "ǆ"}, {"ǅ", "Ǆ"}, {"é", "É"}, {"i", "İ"},
	}
	for _, p := range pairs {
		if got, want := foldKey(p[0]) == foldKey(p[1]), strings.EqualFold(p[0], p[1]); got != want {
			t.Errorf("foldKey(%q)==foldKey(%q) is %v, EqualFold says %v", p[0], p[1], got, want)
		}
	}
}

// TestDecodeDoesNotAlias: the result does not change when the caller
// reuses its buffer.
func TestDecodeDoesNotAlias(t *testing.T) {
	buf := []byte(`{"a":"xyz","n":12}`)
	v, err := Decode(buf, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = ' '
	}
	want := map[string]any{"a": "xyz", "n": json.Number("12")}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("after reuse: %#v, want %#v", v, want)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"role":"user","Role":"admin"}`, `{"a":[1,2,{"b":null}]}`, `"\ud83d\ude00"`, `-0.5e+3`,
		`{"role":"user","role":"admin"}`, "{\"k\":1,\"\u212a\":2}", `[[[[]]]]`, "\"\xff\"",
	} {
		f.Add([]byte(s))
	}
	if data, err := os.ReadFile("testdata/task.request.json"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Decode(data, Limits{MaxDepth: 32})
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Offset < 0 || e.Offset > len(data) || e.Line < 1 || e.Column < 1 {
				t.Fatalf("bad error %#v", err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("Decode accepted %q, encoding/json says it is invalid", data)
		}
		// Differential: encoding/json reads the same value.
		var std any
		sd := json.NewDecoder(bytes.NewReader(data))
		sd.UseNumber()
		if err := sd.Decode(&std); err != nil || !reflect.DeepEqual(v, std) {
			t.Fatalf("Decode(%q) = %#v, encoding/json reads %#v (%v)", data, v, std, err)
		}
		if hasSmugglingKeys(t, data) {
			t.Fatalf("Decode accepted %q, which has duplicate or case-variant keys", data)
		}
		// Round trip: what Decode returned re-encodes to the same value.
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("marshal %#v: %v", v, err)
		}
		v2, err := Decode(out, Limits{MaxDepth: 32, MaxBytes: 4 * len(out)})
		if err != nil {
			t.Fatalf("re-decode %q: %v", out, err)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("round trip changed %#v to %#v", v, v2)
		}
	})
}

// hasSmugglingKeys walks data with encoding/json's tokenizer (an
// independent reader) and reports whether any object has two keys equal
// under strings.EqualFold.
func hasSmugglingKeys(t *testing.T, data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	type frame struct {
		obj  bool
		keys []string
		key  bool // next string token in this object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.obj && top.key
		if top != nil && top.obj {
			top.key = !top.key
		}
		switch tok := tok.(type) {
		case json.Delim:
			switch tok {
			case '{':
				stack = append(stack, &frame{obj: true, key: true})
			case '[':
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].obj {
					// The closed container was a value; next is a key.
					stack[len(stack)-1].key = true
				}
			}
		case string:
			if isKey {
				for _, k := range top.keys {
					if strings.EqualFold(k, tok) {
						return true
					}
				}
				top.keys = append(top.keys, tok)
			}
		}
	}
}
