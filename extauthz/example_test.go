package extauthz_test

import (
	"context"
	"fmt"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/extauthz"
	"github.com/meshward/meshward/policy"
)

func ExampleServer_Check() {
	cfg := policy.Config{
		Identities: []policy.Identity{{SPIFFEID: "spiffe://mesh.local/ns/default/sa/viewer", Roles: []string{"viewer"}}},
		Rules: []policy.Rule{{Name: "list-tasks", Match: policy.Match{Methods: []string{"GET"}, Path: "/v1/tasks"},
			Require: policy.Require{AnyRole: []string{"viewer"}}}},
	}
	store, _ := policy.NewStore(policy.StoreOptions{})
	if err := store.Reload(context.Background(), func() (*policy.Revision, error) {
		return policy.Compile(&cfg, "mesh.local", policy.Options{})
	}); err != nil {
		fmt.Println(err)
		return
	}
	srv, err := extauthz.New(extauthz.Config{Plaintext: true}, "mesh.local", store, extauthz.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, path := range []string{"/v1/tasks", "/v1/../admin"} {
		resp, _ := srv.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source: &authv3.AttributeContext_Peer{Principal: "spiffe://mesh.local/ns/default/sa/viewer"},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Path: path, Host: "executor.mesh.local",
			}},
		}})
		if ok := resp.GetOkResponse(); ok != nil {
			fmt.Println(path, "allowed as", ok.GetHeaders()[0].GetHeader().GetValue())
		} else {
			fmt.Println(path, "denied", resp.GetDeniedResponse().GetStatus().GetCode().Number())
		}
	}
	// Output:
	// /v1/tasks allowed as spiffe://mesh.local/ns/default/sa/viewer
	// /v1/../admin denied 400
}
