package schema

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/meshward/meshward/policy/internal/body"
)

// TestQuickSuite runs the draft 2020-12 suite through Quick alone: on
// every schema it accepts, an instance it calls valid must be valid. The
// counts show it is not vacuous: it takes a good share of the schemas and
// accepts most of their valid instances.
func TestQuickSuite(t *testing.T) {
	var groups, eligible, validInstances, accepted int
	forEachSuiteGroup(t, func(file string, g suiteGroup) {
		groups++
		q := CompileQuick(mustDecode(t, string(g.Schema)), ProfileSet)
		if q == nil {
			return
		}
		eligible++
		for _, tc := range g.Tests {
			doc, err := body.Decode(tc.Data, body.Limits{})
			if err != nil {
				continue // the suite's own test rejects it the same way
			}
			if tc.Valid {
				validInstances++
			}
			if q.Valid(doc) {
				if !tc.Valid {
					t.Errorf("%s %q / %q: Quick says valid, the suite says invalid", file, g.Description, tc.Description)
				}
				accepted++
			}
		}
	})
	t.Logf("Quick took %d of %d suite schemas and accepted %d of their %d valid instances", eligible, groups, accepted, validInstances)
	if eligible < 50 || accepted < validInstances*3/4 {
		t.Errorf("Quick took %d of %d schemas and accepted %d of %d valid instances: the fast path has stopped working", eligible, groups, accepted, validInstances)
	}
}

func TestCompileQuickEligibility(t *testing.T) {
	for _, tc := range []struct {
		name, schema string
		set, opa     bool // eligible for each profile
	}{
		{"refload task.request", `{"type":"object","required":["type"],"properties":{"type":{"const":"task.request"},"id":{"type":"string","pattern":"^[a-f0-9-]{36}$"},"p":{"type":"integer","minimum":0,"maximum":9}},"additionalProperties":false}`, true, true},
		{"empty", `{}`, true, true},
		{"annotations", `{"title":"t","description":"d","$comment":"c","default":1,"examples":[1]}`, true, true},
		{"draft-07", `{"$schema":"http://json-schema.org/draft-07/schema#","type":"string"}`, true, true},
		{"2020-12", `{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"string"}`, true, false},
		{"draft-04", `{"$schema":"http://json-schema.org/draft-04/schema#","type":"string"}`, false, false},
		{"$schema below the root", `{"properties":{"a":{"$schema":"http://json-schema.org/draft-07/schema#"}}}`, false, false},
		{"$id and $defs", `{"$id":"urn:x","$defs":{"a":{"format":"email"}},"type":"string"}`, true, false},
		{"boolean subschema", `{"properties":{"a":false},"items":true}`, true, false},
		{"additionalProperties schema", `{"additionalProperties":{"type":"string"}}`, true, true},
		{"fraction bounds", `{"minimum":0.5,"multipleOf":0.25}`, true, true},
		{"enum of scalars", `{"enum":["a",1,true,null]}`, true, true},
		{"$ref", `{"$ref":"#/$defs/a","$defs":{"a":{}}}`, false, false},
		{"format", `{"format":"email"}`, false, false},
		{"allOf", `{"allOf":[{}]}`, false, false},
		{"anyOf", `{"anyOf":[{}]}`, false, false},
		{"not", `{"not":{}}`, false, false},
		{"if", `{"if":{}}`, false, false},
		{"patternProperties", `{"patternProperties":{"a":{}}}`, false, false},
		{"unevaluatedProperties", `{"unevaluatedProperties":false}`, false, false},
		{"prefixItems", `{"prefixItems":[{}]}`, false, false},
		{"items array (draft-07 tuple)", `{"items":[{}]}`, false, false},
		{"contains", `{"contains":{}}`, false, false},
		{"uniqueItems", `{"uniqueItems":true}`, false, false},
		{"propertyNames", `{"propertyNames":{}}`, false, false},
		{"dependentRequired", `{"dependentRequired":{"a":["b"]}}`, false, false},
		{"unknown keyword", `{"x-custom":1}`, false, false},
		{"nested unsupported", `{"properties":{"a":{"properties":{"b":{"oneOf":[{}]}}}}}`, false, false},
		{"draft-04 exclusiveMaximum", `{"maximum":3,"exclusiveMaximum":true}`, false, false},
		{"object const", `{"const":{"a":1}}`, false, false},
		{"fraction const", `{"const":1.5}`, false, false},
		{"-0 const", `{"const":-0}`, false, false},
		{"enum with duplicates", `{"enum":[0,-0]}`, false, false},
		{"empty enum", `{"enum":[]}`, false, false},
		{"duplicate required", `{"required":["a","a"]}`, false, false},
		{"negative minLength", `{"minLength":-1}`, false, false},
		{"fraction minLength", `{"minLength":1.5}`, false, false},
		{"bad type", `{"type":"int"}`, false, false},
		{"repeated type", `{"type":["string","string"]}`, false, false},
		{"bad pattern", `{"pattern":"(?<=a)b"}`, false, false},
		{"zero multipleOf", `{"multipleOf":0}`, false, false},
		{"string minimum", `{"minimum":"1"}`, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := mustDecode(t, tc.schema)
			if got := CompileQuick(doc, ProfileSet) != nil; got != tc.set {
				t.Errorf("ProfileSet eligible = %v, want %v", got, tc.set)
			}
			if got := CompileQuick(doc, ProfileOPA) != nil; got != tc.opa {
				t.Errorf("ProfileOPA eligible = %v, want %v", got, tc.opa)
			}
		})
	}
}

func TestQuickValid(t *testing.T) {
	for _, tc := range []struct {
		name, schema string
		yes, no      []string // Quick says valid / defers
	}{
		{"type integer", `{"type":"integer"}`, []string{`1`, `-12`, `9007199254740993`}, []string{`1.0`, `1e2`, `1.5`, `"1"`, `null`}},
		{"type number", `{"type":"number"}`, []string{`1`, `1.5`, `-1e-9`}, []string{`"1"`, `true`}},
		{"type list", `{"type":["string","null"]}`, []string{`"a"`, `null`}, []string{`1`, `{}`}},
		{"integer bounds", `{"minimum":0,"maximum":9,"exclusiveMaximum":9}`, []string{`0`, `8`}, []string{`-1`, `9`, `10`, `3.5`, `1e0`}},
		{"fraction bound defers numbers only", `{"minimum":0.5}`, []string{`"s"`, `{}`}, []string{`1`, `2.5`}},
		{"multipleOf", `{"multipleOf":3}`, []string{`0`, `-9`, `12`}, []string{`4`, `6.0`}},
		{"const string", `{"const":"task.request"}`, []string{`"task.request"`}, []string{`"task"`, `1`}},
		{"const integer", `{"const":3}`, []string{`3`}, []string{`3.0`, `"3"`, `4`}},
		{"enum", `{"enum":["a",2,false,null]}`, []string{`"a"`, `2`, `false`, `null`}, []string{`"b"`, `true`, `2.0`}},
		{"length in code points", `{"minLength":2,"maxLength":3}`, []string{`"éé"`, `"\ud83d\ude00\ud83d\ude00"`, `"abc"`, `1`}, []string{`"é"`, `"abcd"`}},
		{"pattern", `{"pattern":"^[a-f0-9-]{4}$"}`, []string{`"ab-0"`, `7`}, []string{`"abcg"`, `"ab-01"`}},
		{"object", `{"required":["a"],"properties":{"a":{"type":"string"},"b":{"type":"integer"}},"additionalProperties":false,"maxProperties":2}`,
			[]string{`{"a":"x"}`, `{"a":"x","b":1}`, `[]`}, []string{`{}`, `{"a":1}`, `{"a":"x","c":1}`, `{"a":"x","b":"y"}`}},
		{"additionalProperties schema", `{"properties":{"a":{}},"additionalProperties":{"type":"integer"},"minProperties":1}`,
			[]string{`{"a":"x","b":1}`, `{"a":null}`}, []string{`{}`, `{"b":"x"}`}},
		{"array", `{"items":{"type":"integer"},"minItems":1,"maxItems":2}`, []string{`[1]`, `[1,2]`, `{}`}, []string{`[]`, `[1,2,3]`, `["a"]`}},
		{"false subschema", `{"properties":{"a":false}}`, []string{`{"b":1}`}, []string{`{"a":1}`}},
		{"true schema", `true`, []string{`1`, `{"a":[]}`}, nil},
		{"false schema", `false`, nil, []string{`1`, `null`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := CompileQuick(mustDecode(t, tc.schema), ProfileSet)
			if q == nil {
				t.Fatal("not eligible")
			}
			set, err := Compile([]Source{{Name: "s", Data: []byte(tc.schema)}}, Options{NoQuick: true})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.yes {
				doc := mustDecode(t, s)
				if !q.Valid(doc) {
					t.Errorf("Valid(%s) = false, want true", s)
				}
				if vs := set.Validate("s", doc); vs != nil {
					t.Errorf("the full validator rejects %s, which Quick accepts: %v", s, vs)
				}
			}
			for _, s := range tc.no {
				if q.Valid(mustDecode(t, s)) {
					t.Errorf("Valid(%s) = true, want false", s)
				}
			}
		})
	}
}

func TestQuickVerdict(t *testing.T) {
	schema := `{"type":"object","required":["n"],"properties":{"n":{"type":"integer","maximum":9},"s":{"enum":["a",1]},
		"f":{"minimum":0.5},"o":{"type":"object","additionalProperties":false}},"additionalProperties":{"type":"string"}}`
	q := CompileQuick(mustDecode(t, schema), ProfileSet)
	if q == nil {
		t.Fatal("not eligible")
	}
	for _, tc := range []struct {
		doc  string
		want Verdict
	}{
		{`{"n":3}`, Valid},
		{`{"n":3,"x":"y","s":"a","o":{}}`, Valid},
		{`{}`, Invalid},
		{`{"n":10}`, Invalid},
		{`{"n":"3"}`, Invalid},
		{`{"n":3.5}`, Unsure},
		{`{"n":-0}`, Unsure},
		{`{"n":-12345678901234567890}`, Unsure},
		{`{"n":3.0}`, Unsure},
		{`{"n":1e1}`, Unsure},
		{`{"n":3,"s":"b"}`, Invalid},
		{`{"n":3,"s":1.0}`, Unsure},
		{`{"n":3,"f":1}`, Unsure},
		{`{"n":3,"f":1,"x":2}`, Invalid}, // one certain failure decides
		{`{"n":3,"o":{"a":1}}`, Invalid},
		{`[]`, Invalid},
	} {
		if got := q.Verdict(mustDecode(t, tc.doc)); got != tc.want {
			t.Errorf("Verdict(%s) = %d, want %d", tc.doc, got, tc.want)
		}
	}
}

// TestSetUsesQuick: a Set answers a valid message without the full
// validator when the schema allows it, and still reports violations.
func TestSetUsesQuick(t *testing.T) {
	schema, err := os.ReadFile(quickstartSchema)
	if err != nil {
		t.Fatal(err)
	}
	set, err := Compile([]Source{{Name: "task", Data: schema}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if set.quick["task"] == nil {
		t.Fatal("the quickstart schema has no fast path")
	}
	msg, err := os.ReadFile("testdata/task.request.json")
	if err != nil {
		t.Fatal(err)
	}
	doc := mustDecode(t, string(msg))
	if vs := set.Validate("task", doc); vs != nil {
		t.Fatalf("valid message: %v", vs)
	}
	// The serving path: the schema step's tape, decoded once. (Validate
	// takes its tape from a pool, which the race detector empties at
	// random, so its allocations are not counted.)
	tp := body.AcquireTape()
	defer tp.Release()
	if err := body.DecodeTapeString(string(msg), body.Limits{}, tp); err != nil {
		t.Fatal(err)
	}
	if allocs := testing.AllocsPerRun(10, func() { set.ValidateTape("task", tp) }); allocs != 0 {
		t.Errorf("a valid message costs %v allocations, want 0 (the fast path)", allocs)
	}
	bad := mustDecode(t, strings.Replace(string(msg), `"priority":3`, `"priority":12`, 1))
	vs := set.Validate("task", bad)
	if len(vs) != 1 || vs[0].Path != "/task/priority" || vs[0].Keyword != "maximum" {
		t.Errorf("violations = %+v, want one maximum at /task/priority", vs)
	}
}

// FuzzQuick: whatever the message, Quick never calls valid what the full
// validator rejects, nor invalid what it accepts, and a Set reports the
// same violations with and without the fast path.
func FuzzQuick(f *testing.F) {
	task, err := os.ReadFile(quickstartSchema)
	if err != nil {
		f.Fatal(err)
	}
	schemas := map[string]string{
		"task": string(task),
		"mix": `{"type":["object","array","integer"],"properties":{"s":{"type":"string","minLength":1,"maxLength":4,"pattern":"^[a-z]*$"},
			"n":{"type":"integer","minimum":-5,"exclusiveMaximum":100,"multipleOf":5},"e":{"enum":["x",1,null,true]},"c":{"const":0},
			"o":{"type":"object","required":["k"],"additionalProperties":{"type":"boolean"},"minProperties":1,"maxProperties":3}},
			"items":{"type":["number","string"],"maximum":3},"minItems":1,"maxItems":4,"additionalProperties":{"type":"array","items":{"type":"null"}}}`,
	}
	var srcs []Source
	quick := map[string]*Quick{}
	for name, s := range schemas {
		srcs = append(srcs, Source{Name: name, Data: []byte(s)})
		if quick[name] = CompileQuick(mustDecode(f, s), ProfileSet); quick[name] == nil {
			f.Fatalf("schema %s has no fast path", name)
		}
	}
	set, err := Compile(srcs, Options{NoQuick: true})
	if err != nil {
		f.Fatal(err)
	}
	fast, err := Compile(srcs, Options{})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		`{"type":"task.request","id":"5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a11","sender":"planner","task":{"name":"summarize","priority":3}}`,
		`{"type":"task.request","id":"5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a11","sender":"p","task":{"name":"","priority":9.0}}`,
		`{"s":"ab","n":95,"e":null,"c":0,"o":{"k":true},"z":[null]}`, `[1,2.5,"abc",-1e3]`, `{"n":-0}`, `15`, `{"c":-0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := body.Decode(data, body.Limits{MaxDepth: 16})
		if err != nil {
			return
		}
		for name, q := range quick {
			want := set.Validate(name, doc)
			switch q.Verdict(doc) {
			case Valid:
				if want != nil {
					t.Fatalf("Quick accepts %s for %s; the validator says %v", data, name, want)
				}
			case Invalid:
				if want == nil {
					t.Fatalf("Quick rejects %s for %s; the validator accepts it", data, name)
				}
			}
			if got := fast.Validate(name, doc); !reflect.DeepEqual(got, want) {
				t.Fatalf("%s for %s: violations with the fast path %v, without %v", data, name, got, want)
			}
		}
	})
}

// TestQuickReportsLikeValidator runs the draft 2020-12 suite through a
// Set with and without the fast path: the violations must be the same
// for every instance, and the fast path must report a good share of the
// invalid instances itself (not vacuous).
func TestQuickReportsLikeValidator(t *testing.T) {
	var invalid, reported int
	forEachSuiteGroup(t, func(file string, g suiteGroup) {
		q := CompileQuick(mustDecode(t, string(g.Schema)), ProfileSet)
		if q == nil {
			return
		}
		src := []Source{{Name: "s", Data: g.Schema}}
		full, err := Compile(src, Options{NoQuick: true, MaxViolations: 100})
		if err != nil {
			t.Fatalf("%s %q: %v", file, g.Description, err)
		}
		fast, err := Compile(src, Options{MaxViolations: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range g.Tests {
			doc, err := body.Decode(tc.Data, body.Limits{})
			if err != nil {
				continue
			}
			want := full.Validate("s", doc)
			if got := fast.Validate("s", doc); !reflect.DeepEqual(got, want) {
				t.Errorf("%s %q / %q: with the fast path %v, without %v", file, g.Description, tc.Description, got, want)
			}
			// The reporter alone, whatever Verdict says.
			if got := full.quickViolations(q, tapeOf(t, doc)); got != nil {
				if got = full.finish(got); !reflect.DeepEqual(got, want) {
					t.Errorf("%s %q / %q: reported %v, the validator %v", file, g.Description, tc.Description, got, want)
				}
			}
			if want != nil {
				invalid++
				if full.quickViolations(q, tapeOf(t, doc)) != nil {
					reported++
				}
			}
		}
	})
	t.Logf("the fast path reported %d of the %d invalid instances of its schemas", reported, invalid)
	if reported < invalid/2 {
		t.Errorf("the fast path reported only %d of %d invalid instances", reported, invalid)
	}
}

// TestQuickFailures compares the fast path's report with the validator's
// on cases the suite has few of: several failures at one value, type
// lists, bounds at and past their limits, nested members and items.
func TestQuickFailures(t *testing.T) {
	for _, tc := range []struct {
		schema string
		docs   []string
		defers []string // docs the fast path leaves to the validator
	}{
		{`{"type":["string","integer","number","null"]}`, []string{`true`, `{}`, `[]`}, nil},
		{`{"type":"integer","minLength":5,"maximum":3}`, []string{`"ab"`, `4`, `3`, `2.5`}, []string{`2.5`}},
		{`{"const":"x","minLength":5}`, []string{`"y"`, `"x"`, `1`}, nil},
		{`{"enum":[1,"a",null],"maximum":0}`, []string{`1`, `2`, `"b"`, `null`}, nil},
		{`{"minimum":-2,"maximum":5,"exclusiveMinimum":-3,"exclusiveMaximum":6,"multipleOf":2}`,
			[]string{`-2`, `-3`, `-4`, `5`, `6`, `7`, `3`, `4`}, nil},
		{`{"minLength":2,"maxLength":3,"pattern":"^a"}`, []string{`"é"`, `"béééé"`, `"ab"`, `"b"`}, nil},
		{`{"type":"object","required":["c","a","b"],"minProperties":4,"maxProperties":1,
		   "properties":{"a":{"type":"string"},"n":{"type":"array","items":{"type":"integer","maximum":1},"minItems":3,"maxItems":1}},
		   "additionalProperties":false}`,
			[]string{`{}`, `{"a":1,"x":1,"y":2}`, `{"a":"s","n":[1,2,"x"]}`, `{"n":[]}`, `{"a":"s","b":1,"c":2,"n":[0]}`}, nil},
		{`{"additionalProperties":{"type":"boolean"},"properties":{"p":true}}`, []string{`{"p":1,"q":1,"r":true}`}, nil},
		{`{"items":{"items":{"const":0}}}`, []string{`[[0,1],[2],[]]`}, nil},
		{`{"properties":{"p":false},"required":["q"]}`, []string{`{"p":1}`}, []string{`{"p":1}`}},
	} {
		q := CompileQuick(mustDecode(t, tc.schema), ProfileSet)
		if q == nil {
			t.Fatalf("%s: no fast path", tc.schema)
		}
		full, err := Compile([]Source{{Name: "s", Data: []byte(tc.schema)}}, Options{NoQuick: true, MaxViolations: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range tc.docs {
			doc := mustDecode(t, d)
			want := full.Validate("s", doc)
			got := full.quickViolations(q, tapeOf(t, doc))
			if got == nil {
				if want != nil && !slices.Contains(tc.defers, d) {
					t.Errorf("%s on %s: no report, the validator %v", tc.schema, d, want)
				}
				continue
			}
			if got = full.finish(got); !reflect.DeepEqual(got, want) {
				t.Errorf("%s on %s: reported %v, the validator %v", tc.schema, d, got, want)
			}
		}
	}
}

// forEachSuiteGroup calls f with every test group of the draft 2020-12
// suite and its file name.
func forEachSuiteGroup(t *testing.T, f func(file string, g suiteGroup)) {
	t.Helper()
	dir := suiteDir + "/tests/draft2020-12"
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		raw, err := os.ReadFile(dir + "/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		var gs []suiteGroup
		if err := json.Unmarshal(raw, &gs); err != nil {
			t.Fatal(err)
		}
		for _, g := range gs {
			f(e.Name(), g)
		}
	}
}

// tapeOf lays doc out as a tape, freed when the test ends.
func tapeOf(t *testing.T, doc any) *body.Tape {
	t.Helper()
	tp := body.AcquireTape()
	t.Cleanup(tp.Release)
	if !tp.FromValue(doc, body.MaxDepthCeiling) {
		t.Fatalf("%v: not a decoded value", doc)
	}
	return tp
}
