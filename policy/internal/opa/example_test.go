package opa_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/policy/internal/opa"
)

func ExampleEngine_Eval() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// One revision: policies and data loaded, compiled and prepared once.
	e, err := opa.New(ctx, opa.Config{
		FS:    os.DirFS("testdata/refload"),
		Files: []string{"policy.rego", "data.json"},
		Query: "envoy/authz/allow",
	})
	if err != nil {
		fmt.Println("load:", err) // the caller keeps its previous engine
		return
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Principal: "spiffe://mesh.local/ns/default/sa/viewer"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/v1/tasks", Host: "executor.mesh.local",
		}},
	}}
	r, err := e.Eval(ctx, &opa.Input{Check: req})
	switch {
	case errors.Is(err, opa.ErrInput):
		fmt.Println("deny 400:", err)
	case err != nil:
		fmt.Println("deny with status_on_error, counted as error:", err)
	case r.Allowed:
		fmt.Println("allow", e.Query())
	default:
		fmt.Println("deny", r.DeniedHttpResponse().GetStatus().GetCode())
	}
	// Output: allow data.envoy.authz.allow
}
