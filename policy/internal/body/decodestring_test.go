package body

import (
	"encoding/json"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// TestDecodeStringMatchesDecode: DecodeString accepts and rejects exactly
// what Decode does, with the same value or error, also when decodes that
// failed half-way (and left pooled scratch behind) come first.
func TestDecodeStringMatchesDecode(t *testing.T) {
	tests := []struct {
		name string
		in   string
		lim  Limits
	}{
		{name: "object", in: `{"a":1,"b":[true,null,"x"],"c":{"d":-0.5e+3}}`},
		{name: "escapes", in: `{"k":"a\"b\\c\u00e9\ud83d\ude00"}`},
		{name: "many keys", in: `{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"r":18}`},
		{name: "duplicate key deep", in: `{"a":{"b":[{"c":1,"c":2}]}}`},
		{name: "case variant key", in: `{"role":"user","Role":"admin"}`},
		{name: "invalid utf8 after escape", in: "{\"k\":\"\\n\xff\"}"},
		{name: "lone surrogate", in: `["\ud800"]`},
		{name: "too deep", in: `[[[[1]]]]`, lim: Limits{MaxDepth: 3}},
		{name: "too large", in: "[1,\n2]", lim: Limits{MaxBytes: 4}},
		{name: "too many values", in: `[1,2,3]`, lim: Limits{MaxValues: 3}},
		{name: "trailing data", in: `{} {}`},
		{name: "empty", in: ` `},
		{name: "valid after failures", in: `{"z":{"y":["x",{"w":"v"}]}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, wantErr := Decode([]byte(tt.in), tt.lim)
			got, err := DecodeString(tt.in, tt.lim)
			if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(err, wantErr) {
				t.Fatalf("DecodeString(%q) = %#v, %v; Decode = %#v, %v", tt.in, got, err, want, wantErr)
			}
		})
	}
}

// TestDecodeLargeScratchNotPooled: a body whose scratch outgrows the pool
// bound still decodes, and the next decode is unaffected.
func TestDecodeLargeScratchNotPooled(t *testing.T) {
	big := "[" + strings.Repeat("1,", 2*maxPooledScratch) + "1]"
	v, err := DecodeString(big, Limits{MaxValues: 3 * maxPooledScratch})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(v.([]any)); n != 2*maxPooledScratch+1 {
		t.Fatalf("got %d elements", n)
	}
	if v, err := DecodeString(`[2]`, Limits{}); err != nil || !reflect.DeepEqual(v, []any{json.Number("2")}) {
		t.Fatalf("after a large body: %#v, %v", v, err)
	}
}

func FuzzDecodeString(f *testing.F) {
	for _, s := range []string{`{"role":"user","Role":"admin"}`, `{"a":[1,2,{"b":null}]}`, "\"\xff\"", `{"a":"\u0041"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lim := Limits{MaxDepth: 32}
		want, wantErr := Decode([]byte(s), lim)
		got, err := DecodeString(s, lim)
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(err, wantErr) {
			t.Fatalf("DecodeString(%q) = %#v, %v; Decode = %#v, %v", s, got, err, want, wantErr)
		}
		// The tape: the same verdict, a well-formed layout, the same value.
		tp := AcquireTape()
		defer tp.Release()
		if terr := DecodeTapeString(s, lim, tp); !reflect.DeepEqual(terr, err) {
			t.Fatalf("DecodeTapeString(%q) = %v; DecodeString = %v", s, terr, err)
		}
		if err != nil {
			if len(tp.Nodes) != 0 {
				t.Fatalf("a refused body left %d nodes", len(tp.Nodes))
			}
			return
		}
		checkTape(t, tp)
		if v := tp.Value(0); !reflect.DeepEqual(v, got) {
			t.Fatalf("tape of %q reads %#v, DecodeString %#v", s, v, got)
		}
		// And back: the value laid out again reads the same.
		back := AcquireTape()
		defer back.Release()
		if !back.FromValue(got, lim.MaxDepth) {
			t.Fatalf("FromValue refused %#v", got)
		}
		checkTape(t, back)
		if v := back.Value(0); !reflect.DeepEqual(v, got) {
			t.Fatalf("FromValue then Value gives %#v, want %#v", v, got)
		}
	})
}

// checkTape checks the layout: one root spanning the tape, every node's
// End past itself and within its parent, Len the count of its children,
// keys on the members of objects only.
func checkTape(t *testing.T, tp *Tape) {
	t.Helper()
	if len(tp.Nodes) == 0 || int(tp.Nodes[0].End) != len(tp.Nodes) || tp.Nodes[0].Key != "" {
		t.Fatalf("root %+v does not span the tape of %d nodes", tp.Nodes[0], len(tp.Nodes))
	}
	var walk func(i int)
	walk = func(i int) {
		v := tp.Nodes[i]
		if int(v.End) <= i || int(v.End) > len(tp.Nodes) {
			t.Fatalf("node %d: End %d", i, v.End)
		}
		if v.Kind != ObjectNode && v.Kind != ArrayNode {
			if int(v.End) != i+1 || v.Len != 0 {
				t.Fatalf("scalar node %d: %+v", i, v)
			}
			return
		}
		n := 0
		for j := i + 1; j < int(v.End); j = int(tp.Nodes[j].End) {
			if v.Kind == ArrayNode && tp.Nodes[j].Key != "" {
				t.Fatalf("item %d of array %d has key %q", j, i, tp.Nodes[j].Key)
			}
			walk(j)
			n++
		}
		if n != int(v.Len) {
			t.Fatalf("node %d: Len %d, %d children", i, v.Len, n)
		}
	}
	walk(0)
}

// BenchmarkDecodeString decodes the task.request body held as a string,
// as extauthz passes Envoy's body field.
func BenchmarkDecodeString(b *testing.B) {
	data, err := os.ReadFile("testdata/task.request.json")
	if err != nil {
		b.Fatal(err)
	}
	s := string(data)
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeString(s, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecodeNumbersKeepText: every number decodes to its exact text,
// whether or not it is one of the shared small integers.
func TestDecodeNumbersKeepText(t *testing.T) {
	var nums []string
	for i := range 120 {
		nums = append(nums, strconv.Itoa(i))
	}
	nums = append(nums, "-0", "-5", "-42", "0.5", "1.0", "1e2", "9E1", "99.5", "12345678901234567890123")
	for _, n := range nums {
		t.Run(n, func(t *testing.T) {
			v, err := DecodeString(`{"n":`+n+`}`, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if got := v.(map[string]any)["n"]; got != json.Number(n) {
				t.Fatalf("got %#v, want json.Number(%q)", got, n)
			}
		})
	}
}
