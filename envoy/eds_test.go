package envoy

import (
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
)

// discoveredMesh is the quickstart with planner's peer executor
// discovered over EDS (viewer keeps its addresses).
func discoveredMesh(t *testing.T) Mesh {
	t.Helper()
	m := loadMesh(t, filepath.Join("testdata", "in", "quickstart.yaml"))
	m.Agents[0].Peers[0].Addresses = nil
	m.Agents[0].Peers[0].Discovered = true
	return m
}

func TestTranslateDiscoveredPeer(t *testing.T) {
	m := discoveredMesh(t)
	nodes, err := Translate(m)
	if err != nil {
		t.Fatal(err)
	}
	planner := nodes["planner"]
	if got := planner.DiscoveredPeers; len(got) != 1 || got[0] != "executor" {
		t.Fatalf("planner's DiscoveredPeers = %v, want [executor]", got)
	}
	var eds *clusterv3.Cluster
	for _, c := range planner.Clusters {
		if c.GetName() == PeerClusterPrefix+"executor" {
			eds = c
		}
	}
	if eds == nil {
		t.Fatal("planner has no peer-executor cluster")
	}
	if err := eds.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	if eds.GetType() != clusterv3.Cluster_EDS || eds.GetLoadAssignment() != nil {
		t.Errorf("peer-executor: type %v with load assignment %v, want EDS without one", eds.GetType(), eds.GetLoadAssignment())
	}
	if eds.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil || eds.GetEdsClusterConfig().GetServiceName() != "" {
		t.Errorf("peer-executor: EDS config %v, want ADS under the cluster's own name", eds.GetEdsClusterConfig())
	}
	if p := eds.GetCommonLbConfig().GetHealthyPanicThreshold(); p == nil || p.GetValue() != 0 {
		t.Errorf("peer-executor: panic threshold %v, want 0", p)
	}
	// The same mTLS to the peer as the static cluster's.
	static, err := TranslateAgent(loadMesh(t, filepath.Join("testdata", "in", "quickstart.yaml")), "planner")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range static.Clusters {
		if c.GetName() == eds.GetName() {
			if !proto.Equal(c.GetTransportSocket(), eds.GetTransportSocket()) || !proto.Equal(c.GetTypedExtensionProtocolOptions()[httpProtocolOpts], eds.GetTypedExtensionProtocolOptions()[httpProtocolOpts]) {
				t.Error("the EDS cluster's TLS or HTTP/2 options differ from the static one's")
			}
		}
	}
	// viewer keeps its static cluster.
	if len(nodes["viewer"].DiscoveredPeers) != 0 {
		t.Errorf("viewer's DiscoveredPeers = %v", nodes["viewer"].DiscoveredPeers)
	}
	for _, c := range nodes["viewer"].Clusters {
		if c.GetName() == PeerClusterPrefix+"executor" && c.GetType() != clusterv3.Cluster_STATIC {
			t.Errorf("viewer's peer-executor is %v, want STATIC", c.GetType())
		}
	}
}

func TestDiscoveredPeerValidation(t *testing.T) {
	m := discoveredMesh(t)
	m.Agents[0].Peers[0].Addresses = []string{"10.0.0.1:15003"}
	if _, err := Translate(m); err == nil || !strings.Contains(err.Error(), "agents[0].peers[0].addresses: exclusive with endpoints discovered over EDS") {
		t.Errorf("addresses and discovered: %v", err)
	}
	m.Agents[0].Peers[0].Addresses, m.Agents[0].Peers[0].Discovered = nil, false
	if _, err := Translate(m); err == nil || !strings.Contains(err.Error(), "agents[0].peers[0].addresses: at least one address is required") {
		t.Errorf("neither: %v", err)
	}
}

func TestLoadAssignment(t *testing.T) {
	cla, err := LoadAssignment("executor", 15001, []Endpoint{
		{Address: "10.0.0.3", Ready: true}, {Address: "10.0.0.1", Ready: false}, {Address: "fd00::2", Ready: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cla.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	if cla.GetClusterName() != "peer-executor" || len(cla.GetEndpoints()) != 1 {
		t.Fatalf("cluster %q with %d localities", cla.GetClusterName(), len(cla.GetEndpoints()))
	}
	type ep struct {
		addr   string
		port   uint32
		health corev3.HealthStatus
	}
	var got []ep
	for _, e := range cla.GetEndpoints()[0].GetLbEndpoints() {
		sa := e.GetEndpoint().GetAddress().GetSocketAddress()
		got = append(got, ep{sa.GetAddress(), sa.GetPortValue(), e.GetHealthStatus()})
	}
	want := []ep{{"10.0.0.1", 15001, corev3.HealthStatus_UNHEALTHY}, {"10.0.0.3", 15001, corev3.HealthStatus_HEALTHY}, {"fd00::2", 15001, corev3.HealthStatus_HEALTHY}}
	if len(got) != len(want) {
		t.Fatalf("endpoints %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("endpoint %d = %v, want %v", i, got[i], want[i])
		}
	}

	// No endpoints: a valid, empty assignment (Envoy answers 503).
	empty, err := LoadAssignment("executor", 15001, nil)
	if err != nil || empty.ValidateAll() != nil || len(empty.GetEndpoints()) != 0 {
		t.Errorf("empty: %v %v", empty, err)
	}

	for name, tc := range map[string]struct {
		agent string
		port  uint32
		eps   []Endpoint
		want  string
	}{
		"host name":  {"executor", 15001, []Endpoint{{Address: "executor.svc"}}, "not an IP address"},
		"zone":       {"executor", 15001, []Endpoint{{Address: "fe80::1%eth0"}}, "not an IP address"},
		"twice":      {"executor", 15001, []Endpoint{{Address: "10.0.0.1"}, {Address: "10.0.0.1", Ready: true}}, "listed twice"},
		"port 0":     {"executor", 0, nil, "port must be 1-65535"},
		"bad agent":  {"Executor", 15001, nil, "must be a DNS label"},
		"port 65536": {"executor", 65536, nil, "port must be 1-65535"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := LoadAssignment(tc.agent, tc.port, tc.eps); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}
