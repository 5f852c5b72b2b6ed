package policy_test

import (
	"context"
	"fmt"

	"github.com/meshward/meshward/policy"
)

func ExampleCompile() {
	cfg := policy.Config{
		Identities: []policy.Identity{
			{SPIFFEID: "spiffe://mesh.local/ns/default/sa/viewer", Roles: []string{"viewer"}, Attributes: map[string]string{"clearance": "low"}},
		},
		Levels: map[string][]string{"clearance": {"low", "medium", "high"}},
		Rules: []policy.Rule{{
			Name:    "read-reports",
			Match:   policy.Match{Methods: []string{"GET"}, PathTemplate: "/v1/reports/{id}"},
			Require: policy.Require{AnyRole: []string{"viewer"}, Attributes: map[string]policy.ValueRequirement{"clearance": {AtLeast: "medium"}}},
		}},
	}
	rev, err := policy.Compile(&cfg, "mesh.local", policy.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	d := rev.Decide(context.Background(), &policy.Input{
		Method: "GET", Path: "/v1/reports/q3", Principal: "spiffe://mesh.local/ns/default/sa/viewer",
	})
	fmt.Println(d.Allow, d.Status, d.Reason)
	fmt.Println(d.Message)
	// Output:
	// false 403 attribute_mismatch
	// rule "read-reports": attribute clearance is low, needs >= medium
}
