package xds_test

import (
	"context"
	"sync"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshward/meshward/envoy"
	"github.com/meshward/meshward/xds"
	"github.com/meshward/meshward/xds/internal/xdsclient"
)

// translatedMesh serves what package envoy translates from a mesh with
// quotas, with placeholder secrets.
type translatedMesh struct {
	mu   sync.Mutex
	mesh envoy.Mesh
}

func (m *translatedMesh) set(f func(*envoy.Mesh)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(&m.mesh)
}

func (m *translatedMesh) SPIFFEIDOf(node string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range m.mesh.Agents {
		if a.Name == node {
			return a.SPIFFEID, true
		}
	}
	return "", false
}

func (m *translatedMesh) NodeResources(_ context.Context, node string) (*xds.NodeResources, error) {
	m.mu.Lock()
	mesh := m.mesh
	m.mu.Unlock()
	nr, err := envoy.TranslateAgent(mesh, node)
	if err != nil {
		return nil, err
	}
	out := &xds.NodeResources{Secrets: []types.Resource{
		envoy.TLSCertificateSecret(envoy.SecretDefault, []byte("chain"), []byte("key")),
		envoy.ValidationSecret(envoy.SecretRootCA, []byte("bundle")),
	}}
	res := nr.Resources()
	out.Listeners = res[resource.ListenerType]
	out.Clusters = res[resource.ClusterType]
	out.Routes = res[resource.RouteType]
	return out, nil
}

// TestInboundListenerCarriesLocalRateLimit: an Envoy-like delta ADS
// client over real gRPC receives the inbound listener with the local
// rate limit of the mesh's quotas as its first HTTP filter, and a quota
// change reaches it on Update.
func TestInboundListenerCarriesLocalRateLimit(t *testing.T) {
	m := &translatedMesh{mesh: envoy.Mesh{
		TrustDomain: td,
		Authz:       envoy.Authz{Address: "127.0.0.1:9191", Plaintext: true},
		Agents: []envoy.Agent{
			{Name: "tools", SPIFFEID: "spiffe://" + td + "/ns/agents/sa/tools", InboundPort: 15003, App: "127.0.0.1:8083"},
		},
		Quotas: []envoy.Quota{{Name: "per-caller", Rate: 10}},
	}}
	srv, err := xds.New(xds.Config{Address: "127.0.0.1:0", Insecure: true}, m, m, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitFor(testCtx(t), t, "server ready", func() bool { return srv.Ready() == nil })

	cc := dialCreds(t, srv.Addr().String(), insecure.NewCredentials())
	c, err := xdsclient.NewDelta(ctx, cc, "tools")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(resource.ListenerType); err != nil {
		t.Fatal(err)
	}
	// next returns the local rate limit of the next inbound listener received.
	next := func() *localrlv3.LocalRateLimit {
		t.Helper()
		for {
			r, err := c.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if err := c.ACK(r); err != nil {
				t.Fatal(err)
			}
			for _, res := range r.GetResources() {
				var l listenerv3.Listener
				if err := res.GetResource().UnmarshalTo(&l); err != nil {
					t.Fatal(err)
				}
				if l.GetName() != envoy.ListenerInbound {
					continue
				}
				var h hcmv3.HttpConnectionManager
				if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
					t.Fatal(err)
				}
				f := h.GetHttpFilters()[0]
				if f.GetName() != "envoy.filters.http.local_ratelimit" {
					t.Fatalf("first inbound HTTP filter is %s, want the local rate limit", f.GetName())
				}
				var rl localrlv3.LocalRateLimit
				if err := f.GetTypedConfig().UnmarshalTo(&rl); err != nil {
					t.Fatal(err)
				}
				if err := rl.ValidateAll(); err != nil {
					t.Fatal(err)
				}
				return &rl
			}
		}
	}
	bucket := func(rl *localrlv3.LocalRateLimit) (string, uint32) {
		d := rl.GetDescriptors()[0]
		return d.GetEntries()[0].GetValue(), d.GetTokenBucket().GetMaxTokens()
	}
	if name, size := bucket(next()); name != "per-caller" || size != 2*10 {
		t.Fatalf("descriptor %s of %d tokens, want per-caller of 20 (headroom 2)", name, size)
	}

	m.set(func(mesh *envoy.Mesh) { mesh.Quotas[0].Burst = 50 })
	if err := srv.Update(ctx, "tools"); err != nil {
		t.Fatal(err)
	}
	if name, size := bucket(next()); name != "per-caller" || size != 2*50 {
		t.Fatalf("after the change: descriptor %s of %d tokens, want per-caller of 100", name, size)
	}
}
