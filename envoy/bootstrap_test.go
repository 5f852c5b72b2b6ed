package envoy

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

var planner = Agent{Name: "planner", SPIFFEID: "spiffe://mesh.local/ns/default/sa/planner", InboundPort: 15001, App: "127.0.0.1:8081"}

// parseYAML reads YAML written by MarshalYAML back into m, the way Envoy
// reads a YAML bootstrap (YAML -> JSON -> proto3 JSON mapping).
func parseYAML(t *testing.T, data []byte, m proto.Message) {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(js, m); err != nil {
		t.Fatalf("YAML does not parse back as %T: %v", m, err)
	}
}

func TestBootstrapGolden(t *testing.T) {
	tests := []struct {
		name string
		opts BootstrapOptions
	}{
		{"mtls", BootstrapOptions{XDSAddress: "meshward.internal:18000", TrustDomain: "mesh.local",
			XDSServerSPIFFEID: "spiffe://mesh.local/ns/meshward/sa/meshward", CertDir: "/etc/meshward/planner", AdminPort: 19001}},
		{"mtls-defaults", BootstrapOptions{XDSAddress: "127.0.0.1:18000", TrustDomain: "mesh.local"}},
		{"insecure", BootstrapOptions{XDSAddress: "127.0.0.1:18000", Insecure: true, Cluster: "demo"}},
		{"admin-socket", BootstrapOptions{XDSAddress: "127.0.0.1:18000", Insecure: true, AdminSocket: "/run/meshward/planner-admin.sock"}},
	}
	var written []string
	golden := func(t *testing.T, path string, got []byte) {
		t.Helper()
		written = append(written, path)
		golden(t, path, got)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bs, err := Bootstrap(planner, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			mustValidate(t, "bootstrap", bs, nil)
			got, err := MarshalYAML(bs)
			if err != nil {
				t.Fatal(err)
			}
			var back bootstrapv3.Bootstrap
			parseYAML(t, got, &back)
			if !proto.Equal(&back, bs) {
				t.Error("bootstrap YAML does not read back to the same message")
			}
			if back.GetNode().GetId() != "planner" {
				t.Errorf("node id %q", back.GetNode().GetId())
			}
			if tc.opts.AdminSocket != "" {
				if p := back.GetAdmin().GetAddress().GetPipe(); p.GetPath() != tc.opts.AdminSocket || p.GetMode() != 0o600 {
					t.Errorf("admin pipe %v, want %s mode 0600", p, tc.opts.AdminSocket)
				}
			} else if a := back.GetAdmin().GetAddress().GetSocketAddress().GetAddress(); a != "127.0.0.1" {
				t.Errorf("admin on %q, want loopback only", a)
			}
			checkXDSKeepalive(t, back.GetStaticResources().GetClusters()[0])
			if ads := back.GetDynamicResources().GetAdsConfig(); ads.GetApiType() != corev3.ApiConfigSource_DELTA_GRPC || ads.GetTransportApiVersion() != corev3.ApiVersion_V3 {
				t.Errorf("ads config %v", ads)
			}
			if got, want := back.GetStaticResources().GetClusters()[0].GetTransportSocket() == nil, tc.opts.Insecure; got != want {
				t.Errorf("xDS cluster without TLS = %v, want %v", got, want)
			}
			golden(t, filepath.Join("testdata", "bootstrap", tc.name+".yaml"), got)
			if tc.opts.Insecure {
				return
			}
			files, err := BootstrapSDSFiles(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{XDSClientSDSFile, XDSCASDSFile} {
				var dr discoveryv3.DiscoveryResponse
				parseYAML(t, files[f], &dr)
				if len(dr.GetResources()) != 1 {
					t.Fatalf("%s: %d resources", f, len(dr.GetResources()))
				}
				var s tlsv3.Secret
				if err := dr.GetResources()[0].UnmarshalTo(&s); err != nil {
					t.Fatal(err)
				}
				mustValidate(t, f, &s, nil)
				golden(t, filepath.Join("testdata", "bootstrap", tc.name+"."+f), files[f])
			}
		})
	}
	deleteStale(t, filepath.Join("testdata", "bootstrap", "*"), written)
}

// checkXDSKeepalive: the xDS connection is probed by HTTP/2 PINGs and TCP
// keepalive on a scale of seconds (the OS default starts after 2 h).
func checkXDSKeepalive(t *testing.T, c *clusterv3.Cluster) {
	t.Helper()
	var po httpv3.HttpProtocolOptions
	if err := c.GetTypedExtensionProtocolOptions()[httpProtocolOpts].UnmarshalTo(&po); err != nil {
		t.Fatal(err)
	}
	ka := po.GetExplicitHttpConfig().GetHttp2ProtocolOptions().GetConnectionKeepalive()
	if ka.GetInterval().AsDuration() != XDSKeepaliveInterval || ka.GetTimeout().AsDuration() != XDSKeepaliveTimeout {
		t.Errorf("HTTP/2 keepalive %v, want a PING every %v answered within %v", ka, XDSKeepaliveInterval, XDSKeepaliveTimeout)
	}
	// The xDS server (xds/server.go) refuses pings closer than 5 s apart
	// with GOAWAY too_many_pings.
	if ka.GetInterval().AsDuration() < 5*time.Second {
		t.Errorf("keepalive interval %v is below the xDS server's 5 s minimum", ka.GetInterval().AsDuration())
	}
	tcp := c.GetUpstreamConnectionOptions().GetTcpKeepalive()
	if tcp.GetKeepaliveTime().GetValue() != 10 || tcp.GetKeepaliveInterval().GetValue() != 5 || tcp.GetKeepaliveProbes().GetValue() != 3 {
		t.Errorf("TCP keepalive %v, want time 10 s, interval 5 s, 3 probes", tcp)
	}
}

func TestBootstrapAdminPortFromAgent(t *testing.T) {
	a := planner
	a.AdminPort = 19005
	opts := BootstrapOptions{XDSAddress: "127.0.0.1:18000", Insecure: true}
	bs, err := Bootstrap(a, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := bs.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); got != 19005 {
		t.Errorf("admin port %d, want the agent's 19005", got)
	}
	opts.AdminPort = 19006
	if bs, err = Bootstrap(a, opts); err != nil {
		t.Fatal(err)
	}
	if got := bs.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); got != 19006 {
		t.Errorf("admin port %d, want the option's 19006 over the agent's", got)
	}
}

// deleteStale reports (or with -update deletes) golden files matching
// pattern that no test wrote.
func deleteStale(t *testing.T, pattern string, written []string) {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if slices.Contains(written, f) {
			continue
		}
		if *update {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s is stale; run go test ./envoy -update to delete it", f)
	}
}

func TestBootstrapInvalid(t *testing.T) {
	tests := []struct {
		name  string
		agent Agent
		opts  BootstrapOptions
		want  string
	}{
		{"bad node", Agent{Name: "Planner!"}, BootstrapOptions{XDSAddress: "127.0.0.1:1", TrustDomain: "mesh.local"}, "DNS label"},
		{"no xds address", planner, BootstrapOptions{TrustDomain: "mesh.local"}, "xds address"},
		{"wildcard xds address", planner, BootstrapOptions{XDSAddress: "0.0.0.0:18000", TrustDomain: "mesh.local"}, "xds address: address 0.0.0.0:18000: wildcard address"},
		{"no trust domain", planner, BootstrapOptions{XDSAddress: "127.0.0.1:1"}, "trust domain"},
		{"relative cert dir", planner, BootstrapOptions{XDSAddress: "127.0.0.1:1", TrustDomain: "mesh.local", CertDir: "certs"}, "absolute"},
		{"server id outside td", planner, BootstrapOptions{XDSAddress: "127.0.0.1:1", TrustDomain: "mesh.local", XDSServerSPIFFEID: "spiffe://x.local/m"}, "not in trust domain"},
		{"admin port", planner, BootstrapOptions{XDSAddress: "127.0.0.1:1", TrustDomain: "mesh.local", AdminPort: 70000}, "admin port"},
		{"relative admin socket", planner, BootstrapOptions{XDSAddress: "127.0.0.1:1", TrustDomain: "mesh.local", AdminSocket: "admin.sock"}, "must be absolute"},
		{"admin socket and port", planner, BootstrapOptions{XDSAddress: "127.0.0.1:1", TrustDomain: "mesh.local", AdminSocket: "/a.sock", AdminPort: 1}, "exclusive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bs, err := Bootstrap(tc.agent, tc.opts)
			if err == nil || bs != nil {
				t.Fatalf("got %v, %v; want an error", bs, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// golden compares got with the file at path, or rewrites it with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./envoy -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs; run go test ./envoy -update and review the diff", path)
	}
}

func TestPodNodeID(t *testing.T) {
	for _, tc := range []struct {
		agent, pod, ns string
		want           string // "" for an error
	}{
		{"planner", "planner-7d9f5-x2k4q", "agents", "planner.planner-7d9f5-x2k4q.agents"},
		{"planner", "planner.v2.0", "agents", "planner.planner.v2.0.agents"}, // pod names may hold dots
		{"planner", "", "agents", ""},
		{"planner", "Planner", "agents", ""},
		{"planner", "p..q", "agents", ""},
		{"planner", strings.Repeat("a", 254), "agents", ""},
		{"planner", "planner-0", "a.b", ""},
		{"planner", "planner-0", "", ""},
		{"Planner", "planner-0", "agents", ""},
		{"a.b", "planner-0", "agents", ""},
	} {
		got, err := PodNodeID(tc.agent, tc.pod, tc.ns)
		if (err == nil) != (tc.want != "") || got != tc.want {
			t.Errorf("PodNodeID(%q, %q, %q) = %q, %v; want %q", tc.agent, tc.pod, tc.ns, got, err, tc.want)
			continue
		}
		if err != nil {
			continue
		}
		a, p, n, ok := ParsePodNodeID(got)
		if !ok || a != tc.agent || p != tc.pod || n != tc.ns {
			t.Errorf("ParsePodNodeID(%q) = %q, %q, %q, %v", got, a, p, n, ok)
		}
	}
	for _, node := range []string{"planner", "planner.agents", "planner..agents", ".p.agents", "planner.p.", "planner.P.agents", ""} {
		if _, _, _, ok := ParsePodNodeID(node); ok {
			t.Errorf("ParsePodNodeID(%q) accepted", node)
		}
	}
}

func FuzzParsePodNodeID(f *testing.F) {
	f.Add("planner.planner-0.agents")
	f.Add("a.b.c.d")
	f.Fuzz(func(t *testing.T, node string) {
		a, p, n, ok := ParsePodNodeID(node)
		if !ok {
			return
		}
		back, err := PodNodeID(a, p, n)
		if err != nil || back != node {
			t.Fatalf("ParsePodNodeID(%q) = %q, %q, %q; PodNodeID gives %q, %v", node, a, p, n, back, err)
		}
	})
}
