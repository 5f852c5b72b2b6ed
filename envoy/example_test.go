package envoy_test

import (
	"fmt"

	"github.com/meshward/meshward/envoy"
)

func ExampleTranslate() {
	mesh := envoy.Mesh{
		TrustDomain: "mesh.local",
		Authz:       envoy.Authz{Address: "127.0.0.1:9191"},
		Agents: []envoy.Agent{
			{
				Name: "planner", SPIFFEID: "spiffe://mesh.local/ns/default/sa/planner",
				InboundPort: 15001, OutboundPort: 15101, App: "127.0.0.1:8081",
				Peers: []envoy.Peer{{
					Name: "executor", Addresses: []string{"127.0.0.1:15003"},
					Credential: &envoy.Credential{Secret: "executor-token", Format: "Bearer %s"},
				}},
			},
			{Name: "executor", SPIFFEID: "spiffe://mesh.local/ns/default/sa/executor", InboundPort: 15003, App: "127.0.0.1:8083"},
		},
	}
	nodes, err := envoy.Translate(mesh)
	if err != nil {
		fmt.Println(err)
		return
	}
	p := nodes["planner"]
	for _, l := range p.Listeners {
		fmt.Println("listener", l.GetName())
	}
	for _, c := range p.Clusters {
		fmt.Println("cluster", c.GetName())
	}
	fmt.Println("secrets", p.SecretNames)
	// Output:
	// listener inbound
	// listener outbound
	// cluster app
	// cluster meshward-authz
	// cluster peer-executor
	// secrets [ROOTCA default executor-token]
}

func ExampleBootstrap() {
	agent := envoy.Agent{Name: "planner"}
	bs, err := envoy.Bootstrap(agent, envoy.BootstrapOptions{
		XDSAddress:  "meshward.internal:18000",
		TrustDomain: "mesh.local",
		CertDir:     "/etc/meshward/planner",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	y, err := envoy.MarshalYAML(bs)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(y) > 0, bs.GetNode().GetId(), bs.GetDynamicResources().GetAdsConfig().GetApiType())
	// Output: true planner DELTA_GRPC
}
