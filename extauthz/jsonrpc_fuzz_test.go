package extauthz

import (
	"context"
	"encoding/json"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/meshward/meshward/policy"
)

// FuzzCheckJSONRPC sends any body to an MCP route through the whole Check.
// It must never fail or panic; an allowed body is a strict-JSON object or
// array; every deny body is valid JSON in the JSON-RPC error shape, with a
// 4xx status. Seeds: testdata/fuzz/FuzzCheckJSONRPC.
func FuzzCheckJSONRPC(f *testing.F) {
	for _, seed := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"query":"go"}}}`,
		`[{"jsonrpc":"2.0","id":"a","method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"}]`,
		`{"jsonrpc":"2.0","id":-0,"method":"tools/call","params":{"name":"search","arguments":{"query":"go","limit":1e2}}}`,
		`{"jsonrpc":"2.0","id":"\u0000\"","method":"tools/call","params":{"name":"search","name":"x"}}`,
	} {
		f.Add(seed, true)
	}
	pol := mcpPolicy()
	pol.Quotas = nil
	s := newServer(f, plainConfig(), newStore(f, pol, policy.Options{}), Options{})
	f.Fuzz(func(t *testing.T, b string, planner bool) {
		who := spiffe("viewer")
		if planner {
			who = spiffe("planner")
		}
		resp, err := s.Check(context.Background(), mcpReq(who, b))
		if err != nil {
			t.Fatalf("Check error: %v", err)
		}
		if resp.GetStatus().GetCode() == int32(codes.OK) {
			v, err := policy.DecodeBody(b)
			if err != nil {
				t.Fatalf("allowed a body the strict decoder refuses: %v", err)
			}
			switch v.(type) {
			case map[string]any, []any:
			default:
				t.Fatalf("allowed a %T body", v)
			}
			return
		}
		dr := resp.GetDeniedResponse()
		if st := dr.GetStatus().GetCode(); st < 400 || st > 499 {
			t.Fatalf("deny status %d", st)
		}
		var e rpcError
		if err := json.Unmarshal([]byte(dr.GetBody()), &e); err != nil || e.JSONRPC != "2.0" || e.Error.Code == 0 || e.Error.Data.Error == "" {
			t.Fatalf("deny body %q (%v)", dr.GetBody(), err)
		}
		if !json.Valid(e.ID) {
			t.Fatalf("id %q", e.ID)
		}
	})
}
