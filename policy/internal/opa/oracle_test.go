package opa

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rego "github.com/open-policy-agent/opa/v1/rego"
	"google.golang.org/protobuf/proto"

	"github.com/meshward/meshward/policy/internal/body"
)

// The differential oracle: for a corpus of opa-envoy-plugin-style
// policies and mutated requests, meshward's Engine (every fast path on:
// input pruning, partial evaluation with its rewrites, the compiled
// residual decision, the json.match_schema fast path, and the body the
// schema step decoded) must decide exactly what plain, unmodified OPA
// decides on the input document opa-envoy-plugin builds (naiveInput,
// written from the plugin's source, not from meshward's builders).
//
// Plain OPA here is rego.New on the policy text with OPA's own builtins:
// nothing in this process replaces json.match_schema (meshward's fast
// path is a function only its own prepared queries call).

// oraclePolicies is the corpus. Each targets a fast path or a Rego
// construct that an analysis could get wrong.
var oraclePolicies = map[string]string{
	"ref head (issue 21)": `default allow := false
banned := {"spiffe://mesh.local/ns/default/sa/viewer"}
caller[input.attributes.source.principal].seen := true
is_banned if { some p, _ in caller; p in banned }
allow if { input.attributes.request.http.method == "GET"; not is_banned }`,
	"ref head with a header key": `default allow := false
seen[input.attributes.request.http.headers["x-agent"]].at := 1
allow if { input.attributes.request.http.method == "POST"; not seen["executor"] }`,
	"else chain": `default allow := false
allow := true if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "v1"
} else := false if {
	input.attributes.source.principal == "spiffe://mesh.local/ns/default/sa/viewer"
} else := true if {
	startswith(input.attributes.request.http.path, "/v1/tasks")
}`,
	"every and some": `default allow := false
allow if {
	some seg in input.parsed_path
	seg == "tasks"
	every k, v in input.parsed_query { count(v) == 1; k != "admin" }
}`,
	"big numbers": `default allow := false
allow if input.parsed_body.n == 12345678901234567890
allow if input.parsed_body.n > 9007199254740993
allow if input.parsed_body.f == 0.1`,
	"method table from data": `default allow := false
routes := {"GET": ["/v1/tasks", "/v1/status"], "POST": ["/v1/tasks"]}
allow if {
	some p in routes[input.attributes.request.http.method]
	input.attributes.request.http.path == p
}`,
	"role table": `default allow := false
roles := {"spiffe://mesh.local/ns/default/sa/planner": ["writer"], "spiffe://mesh.local/ns/default/sa/viewer": ["reader"]}
perms := {"writer": {"GET", "POST"}, "reader": {"GET"}}
allow if {
	some r in roles[input.attributes.source.principal]
	input.attributes.request.http.method in perms[r]
}`,
	"object decision": `default allow := {"allowed": false, "http_status": 401, "body": "no"}
allow := {"allowed": true, "headers": {"x-caller": input.attributes.source.principal}} if {
	input.attributes.request.http.method == "GET"
}`,
	"negation and comprehensions": `default allow := false
admins := {p | some p in ["/admin", "/v1/admin"]}
allow if {
	not input.attributes.request.http.path in admins
	count([h | some h, _ in input.attributes.request.http.headers; startswith(h, "x-")]) < 3
}`,
	"form body": `default allow := false
allow if input.parsed_body.kind[0] == "task"
allow if input.parsed_body.kind == "task"`,
	"match_schema valid body": `default allow := false
schema := {"type": "object", "required": ["kind"], "properties": {"kind": {"type": "string", "minLength": 1, "maxLength": 8}}}
allow if {
	[ok, _] := json.match_schema(input.parsed_body, schema)
	ok
}`,
	"match_schema minLength > maxLength": `default allow := false
schema := {"type": "object", "properties": {"kind": {"type": "string", "minLength": 5, "maxLength": 2}}}
allow if {
	[ok, _] := json.match_schema(input.parsed_body, schema)
	ok
}`,
	"match_schema minProperties > maxProperties, negated": `default allow := false
schema := {"type": "object", "minProperties": 3, "maxProperties": 1}
allow if {
	[ok, _] := json.match_schema(input.parsed_body, schema)
	not ok
}
allow if {
	[ok, _] := json.match_schema(input.parsed_body, schema)
	ok
}`,
	"match_schema errors read": `default allow := false
schema := {"type": "object", "properties": {"kind": {"enum": ["task", "note"]}}, "additionalProperties": false}
allow if {
	[_, errs] := json.match_schema(input.parsed_body, schema)
	count(errs) == 0
}`,
	"match_schema call with output": `default allow := false
schema := {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "maximum": 10}}}
allow if {
	json.match_schema(input.parsed_body, schema, [ok, _])
	ok
}`,
	"headers and query": `default allow := false
allow if {
	input.attributes.request.http.headers["x-tenant"] == "blue"
	input.parsed_query.v[0] == "2"
}
allow if input.attributes.request.http.headers[":method"] == "OPTIONS"`,
	"destination and context": `default allow := false
allow if {
	input.attributes.destination.principal == "spiffe://mesh.local/ns/default/sa/executor"
	input.attributes.request.http.host == "executor.mesh.local"
	input.truncated_body == false
}`,
	"meshward input absent in the plugin": `default allow := false
allow if not input.meshward
allow if input.meshward.principal == "nobody"`,
	"string functions": `default allow := false
allow if {
	parts := split(trim_prefix(input.attributes.request.http.path, "/"), "/")
	count(parts) >= 2
	lower(input.attributes.request.http.method) == "get"
	not contains(input.attributes.request.http.path, "admin")
}`,
	"walk over input": `default allow := false
allow if {
	walk(input.parsed_body, [_, v])
	v == "task"
}`,
}

// oracleDecision is one side's outcome: an error (deny with
// status_on_error or 400), or a validated Result.
type oracleDecision struct {
	err bool
	res *Result
}

func (d oracleDecision) String() string {
	if d.err {
		return "error"
	}
	return fmt.Sprintf("allowed=%v status=%d headers=%v body=%q", d.res.Allowed, d.res.HTTPStatus, d.res.Headers, d.res.Body)
}

func sameDecision(a, b oracleDecision) bool {
	if a.err || b.err {
		return a.err == b.err
	}
	return resultEqual(a.res, b.res)
}

// plainOPA prepares src with nothing but OPA.
func plainOPA(t testing.TB, src string) rego.PreparedEvalQuery {
	t.Helper()
	pq, err := rego.New(
		rego.Module("p.rego", "package envoy.authz\n\n"+src),
		rego.Query(DefaultQuery),
	).PrepareForEval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return pq
}

func oracleEval(ctx context.Context, pq rego.PreparedEvalQuery, req *authv3.CheckRequest) oracleDecision {
	input, err := naiveInput(req)
	if err != nil {
		return oracleDecision{err: true} // the plugin refuses the request
	}
	rs, err := pq.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil || len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return oracleDecision{err: true}
	}
	res, err := decisionToResult(rs[0].Expressions[0].Value)
	if err != nil {
		return oracleDecision{err: true}
	}
	return oracleDecision{res: res}
}

// servedInput is an Input as the served path gives it: with the body
// the schema step decoded. It is given whenever the body decodes as
// JSON, whatever the content-type: the schema step refuses media types
// whose Rego reading is not JSON (body.CheckHeaders), but the engine must
// not depend on that.
func servedInput(req *authv3.CheckRequest) *Input {
	in := &Input{Check: req}
	if v, err := body.Decode([]byte(req.GetAttributes().GetRequest().GetHttp().GetBody()), body.Limits{}); err == nil {
		in.ParsedBody, in.HasParsedBody = v, true
	}
	return in
}

func meshwardEval(ctx context.Context, e *Engine, in *Input) oracleDecision {
	res, err := e.Eval(ctx, in)
	if err != nil {
		return oracleDecision{err: true}
	}
	return oracleDecision{res: res}
}

// oracleRequests are the mutated requests: every combination a seeded
// generator picks from the parts below.
var (
	oracleMethods    = []string{"GET", "POST", "PUT", "OPTIONS", "get", "DELETE"}
	oraclePaths      = []string{"/v1/tasks", "/v1/tasks/7?v=2", "/v1/status", "/admin", "/v1/admin", "/", "/v1/tasks?admin=1&v=2", "/v1/%61dmin", "/v1/tasks?v=2&v=3"}
	oraclePrincipals = []string{"spiffe://mesh.local/ns/default/sa/planner", "spiffe://mesh.local/ns/default/sa/viewer", "spiffe://mesh.local/ns/default/sa/executor", ""}
	oracleTypes      = []string{"application/json", "application/x-www-form-urlencoded", "application/x-www-form-urlencoded+json",
		"application/problem+json", "multipart/form-data; boundary=b", "text/plain", "", "application/json; charset=utf-8"}
	oracleBodies = []string{`{"kind":"task"}`, `{"kind":"toolongkind"}`, `{"n":12345678901234567890}`, `{"n":9007199254740993}`, `{"f":0.1}`,
		`{"n":3}`, `{"kind":"note","x":1}`, `kind=task`, `{}`, `[1,2]`, `{"a":{"b":"task"}}`, `{bad`, ``,
		"--b\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\ntask\r\n--b--\r\n", `{"kind":"task","kind":"x"}`}
	oracleHeaders = []map[string]string{nil, {"x-tenant": "blue"}, {"x-agent": "executor"}, {"x-a": "1", "x-b": "2", "x-c": "3"}, {"content-length": "999"}}
)

func oracleRequest(r *rand.Rand) *authv3.CheckRequest {
	pick := func(n int) int { return r.IntN(n) }
	method := oracleMethods[pick(len(oracleMethods))]
	headers := map[string]string{}
	for k, v := range oracleHeaders[pick(len(oracleHeaders))] {
		headers[k] = v
	}
	if ct := oracleTypes[pick(len(oracleTypes))]; ct != "" {
		headers["content-type"] = ct
	}
	req := checkRequest(method, oraclePaths[pick(len(oraclePaths))], headers, oracleBodies[pick(len(oracleBodies))])
	req.Attributes.Source.Principal = oraclePrincipals[pick(len(oraclePrincipals))]
	if pick(2) == 0 {
		req.Attributes.Destination = &authv3.AttributeContext_Peer{Principal: "spiffe://mesh.local/ns/default/sa/executor"}
	}
	return req
}

// oracleRequestsPerPolicy bounds the corpus `make test` runs; the fuzz
// target goes further.
const oracleRequestsPerPolicy = 300

func TestOracle(t *testing.T) {
	policies := map[string]string{}
	for name, src := range oraclePolicies {
		policies[name] = src
	}
	decisions, allows := 0, 0
	for name, src := range policies {
		t.Run(name, func(t *testing.T) {
			ctx := testContext(t) // per policy: the whole corpus takes longer under -race
			e := engineFor(t, src)
			pq := plainOPA(t, src)
			r := rand.New(rand.NewPCG(uint64(len(name)), 21))
			for range oracleRequestsPerPolicy {
				req := oracleRequest(r)
				want := oracleEval(ctx, pq, req)
				for _, in := range []*Input{{Check: req}, servedInput(req)} {
					got := meshwardEval(ctx, e, in)
					decisions++
					if !want.err && want.res.Allowed {
						allows++
					}
					if !sameDecision(want, got) {
						h := req.Attributes.Request.Http
						t.Fatalf("%s %s principal=%q headers=%v body=%q (parsed body given: %v): meshward %v, OPA %v",
							h.Method, h.Path, req.Attributes.Source.Principal, h.Headers, h.Body, in.HasParsedBody, got, want)
					}
				}
			}
		})
	}
	t.Logf("%d decisions compared, %d of them allows", decisions, allows)
	if allows == 0 || allows == decisions {
		t.Errorf("the corpus is one-sided: %d allows of %d", allows, decisions)
	}
}

// TestOracleRefload runs the reference workload's policy (with its data)
// through the oracle, on its own requests and mutated ones.
func TestOracleRefload(t *testing.T) {
	ctx := testContext(t)
	dir := filepath.Join("testdata", "refload")
	e := refloadEngine(t)
	pq, err := rego.New(rego.Load([]string{filepath.Join(dir, "policy.rego"), filepath.Join(dir, "data.json")}, nil),
		rego.Query(DefaultQuery)).PrepareForEval(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reqs := []*authv3.CheckRequest{}
	for _, f := range []string{"allow.json", "deny_abac.json", "deny_schema.json", "allow_get.json"} {
		reqs = append(reqs, loadCheck(t, filepath.Join(dir, f)))
	}
	r := rand.New(rand.NewPCG(5, 21))
	base := len(reqs)
	for range 200 {
		req := proto.Clone(reqs[r.IntN(base)]).(*authv3.CheckRequest)
		h := req.Attributes.Request.Http
		switch r.IntN(4) {
		case 0:
			h.Body = oracleBodies[r.IntN(len(oracleBodies))]
		case 1:
			h.Method = oracleMethods[r.IntN(len(oracleMethods))]
		case 2:
			req.Attributes.Source.Principal = oraclePrincipals[r.IntN(len(oraclePrincipals))]
		default:
			h.Headers["content-type"] = oracleTypes[r.IntN(len(oracleTypes))]
		}
		reqs = append(reqs, req)
	}
	for i, req := range reqs {
		want := oracleEval(ctx, pq, req)
		for _, in := range []*Input{{Check: req}, servedInput(req)} {
			if got := meshwardEval(ctx, e, in); !sameDecision(want, got) {
				t.Fatalf("request %d (parsed body given: %v): meshward %v, OPA %v", i, in.HasParsedBody, got, want)
			}
		}
	}
}

// TestNondeterministicBuiltinsNotFrozen: a policy that reads the clock is
// decided with the time of the Check, not the time of the load (partial
// evaluation must not fold time.now_ns into a constant).
func TestNondeterministicBuiltinsNotFrozen(t *testing.T) {
	ctx := testContext(t)
	e := engineFor(t, `default allow := false
allow if time.now_ns() > to_number(input.attributes.request.http.headers["x-after"])`)
	after := time.Now().Add(20 * time.Millisecond).UnixNano()
	req := checkRequest("GET", "/", map[string]string{"x-after": strconv.FormatInt(after, 10)}, "")
	if got := meshwardEval(ctx, e, &Input{Check: req}); got.err || got.res.Allowed {
		t.Fatalf("before x-after: %v, want a deny", got)
	}
	for time.Now().UnixNano() <= after {
		time.Sleep(5 * time.Millisecond)
	}
	if got := meshwardEval(ctx, e, &Input{Check: req}); got.err || !got.res.Allowed {
		t.Fatalf("after x-after: %v, want an allow (the clock was read at load)", got)
	}
}

// FuzzOracle: whatever the request, meshward decides what OPA decides,
// for every policy of the corpus.
func FuzzOracle(f *testing.F) {
	names := make([]string, 0, len(oraclePolicies))
	for n := range oraclePolicies {
		names = append(names, n)
	}
	engines := make([]*Engine, len(names))
	plain := make([]rego.PreparedEvalQuery, len(names))
	for i, n := range names {
		e, err := New(context.Background(), Config{Tuning: testTuning, FS: fstest.MapFS{"p.rego": {Data: []byte("package envoy.authz\n\n" + oraclePolicies[n])}}, Files: []string{"p.rego"}})
		if err != nil {
			f.Fatal(err)
		}
		engines[i], plain[i] = e, plainOPA(f, oraclePolicies[n])
	}
	f.Add("GET", "/v1/tasks", "spiffe://mesh.local/ns/default/sa/viewer", "application/json", `{"kind":"task"}`, "")
	f.Add("POST", "/v1/tasks?v=2", "spiffe://mesh.local/ns/default/sa/planner", "application/x-www-form-urlencoded+json", `{"kind":"task"}`, "executor")
	f.Add("GET", "/v1/status", "", "application/problem+json", `{"n":12345678901234567890}`, "blue")
	f.Fuzz(func(t *testing.T, method, path, principal, ct, bodyText, header string) {
		if method == "" || !strings.HasPrefix(path, "/") {
			return
		}
		headers := map[string]string{"x-tenant": header, "x-agent": header}
		if ct != "" {
			headers["content-type"] = ct
		}
		req := checkRequest(method, path, headers, bodyText)
		req.Attributes.Source.Principal = principal
		if _, err := proto.Marshal(req); err != nil {
			return // not a CheckRequest gRPC can carry (a string that is not UTF-8)
		}
		ctx := context.Background()
		for i := range names {
			want := oracleEval(ctx, plain[i], req)
			for _, in := range []*Input{{Check: req}, servedInput(req)} {
				got := meshwardEval(ctx, engines[i], in)
				if !sameDecision(want, got) {
					t.Fatalf("%s: %s %q principal=%q ct=%q body=%q (parsed body given: %v): meshward %v, OPA %v",
						names[i], method, path, principal, ct, bodyText, in.HasParsedBody, got, want)
				}
			}
		}
	})
}
