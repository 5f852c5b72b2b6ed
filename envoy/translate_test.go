package envoy

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/out (and delete stale ones)")

// loadMesh decodes a golden input strictly: an unknown key is an error.
func loadMesh(t *testing.T, path string) Mesh {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m Mesh
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// renderNodes is the golden form of Translate's output: per node, every
// resource in the proto3 JSON mapping, as sorted YAML.
func renderNodes(t *testing.T, nodes map[string]*NodeResources) []byte {
	t.Helper()
	js := func(m proto.Message) json.RawMessage {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	doc := map[string]any{}
	for name, nr := range nodes {
		var ls, cs, rs []json.RawMessage
		for _, l := range nr.Listeners {
			ls = append(ls, js(l))
		}
		for _, c := range nr.Clusters {
			cs = append(cs, js(c))
		}
		for _, r := range nr.Routes {
			rs = append(rs, js(r))
		}
		doc[name] = map[string]any{
			"listeners": ls, "clusters": cs, "routes": rs,
			"secret_names": nr.SecretNames, "generic_secrets": nr.GenericSecrets,
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	y, err := jsonToYAML(b)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

func TestTranslateGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "in", "*.yaml"))
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	var want []string
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		out := filepath.Join("testdata", "out", name+".yaml")
		want = append(want, out)
		t.Run(name, func(t *testing.T) {
			m := loadMesh(t, in)
			nodes, err := Translate(m)
			if err != nil {
				t.Fatal(err)
			}
			if len(nodes) != len(m.Agents) {
				t.Fatalf("got %d nodes, want %d", len(nodes), len(m.Agents))
			}
			for node, nr := range nodes {
				checkNode(t, node, nr)
			}
			got := renderNodes(t, nodes)
			if *update {
				if err := os.WriteFile(out, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			golden, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("%v (run go test ./envoy -update)", err)
			}
			if !bytes.Equal(got, golden) {
				t.Errorf("%s differs from the translation; run go test ./envoy -update and review the diff", out)
			}
		})
	}
	outputs, err := filepath.Glob(filepath.Join("testdata", "out", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range outputs {
		if slices.Contains(want, out) {
			continue
		}
		if *update {
			if err := os.Remove(out); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s has no input in testdata/in; run go test ./envoy -update to delete it", out)
	}
}

// TestTranslateQuickstart translates the agents of the shipped quickstart
// configuration (read here without the config package, which lives under
// cmd/) and validates every resource.
func TestTranslateQuickstart(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "examples", "quickstart", "meshward.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var qs struct {
		TrustDomain string  `yaml:"trustDomain"`
		Agents      []Agent `yaml:"agents"`
		Authz       struct {
			Address   string `yaml:"address"`
			Plaintext bool   `yaml:"plaintext"`
		} `yaml:"authz"`
	}
	if err := yaml.Unmarshal(data, &qs); err != nil {
		t.Fatal(err)
	}
	if len(qs.Agents) == 0 {
		t.Fatal("quickstart has no agents")
	}
	for _, plaintext := range []bool{qs.Authz.Plaintext, false} {
		m := Mesh{TrustDomain: qs.TrustDomain, Agents: qs.Agents, Authz: Authz{Address: qs.Authz.Address, Plaintext: plaintext}}
		nodes, err := Translate(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range qs.Agents {
			nr, ok := nodes[a.Name]
			if !ok {
				t.Fatalf("no resources for %q", a.Name)
			}
			checkNode(t, a.Name, nr)
		}
	}
}

func TestTranslateDeterministic(t *testing.T) {
	m := loadMesh(t, filepath.Join("testdata", "in", "credentials.yaml"))
	first, err := Translate(m)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		again, err := Translate(m)
		if err != nil {
			t.Fatal(err)
		}
		for node, nr := range first {
			for i, l := range nr.Listeners {
				a, _ := deterministic.Marshal(l)
				b, _ := deterministic.Marshal(again[node].Listeners[i])
				if !bytes.Equal(a, b) {
					t.Fatalf("%s: listener %s not byte-identical across translations", node, l.GetName())
				}
			}
			for i, c := range nr.Clusters {
				if !proto.Equal(c, again[node].Clusters[i]) {
					t.Fatalf("%s: cluster %s differs across translations", node, c.GetName())
				}
			}
		}
	}
}

func TestTranslateAgent(t *testing.T) {
	m := loadMesh(t, filepath.Join("testdata", "in", "quickstart.yaml"))
	nr, err := TranslateAgent(m, "planner")
	if err != nil {
		t.Fatal(err)
	}
	all, err := Translate(m)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(nr.Listeners[0], all["planner"].Listeners[0]) || len(nr.Clusters) != len(all["planner"].Clusters) {
		t.Error("TranslateAgent and Translate disagree on planner")
	}
	if _, err := TranslateAgent(m, "nobody"); !errors.Is(err, ErrUnknownAgent) {
		t.Errorf("unknown node: got %v, want ErrUnknownAgent", err)
	}
	// Executor has no peers: no outbound listener, route or peer cluster.
	ex, err := TranslateAgent(m, "executor")
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.Listeners) != 1 || len(ex.Routes) != 1 || len(ex.Clusters) != 2 {
		t.Errorf("executor: %d listeners, %d routes, %d clusters; want 1, 1, 2", len(ex.Listeners), len(ex.Routes), len(ex.Clusters))
	}
	if got := len(nr.Resources()["type.googleapis.com/envoy.config.listener.v3.Listener"]); got != 2 {
		t.Errorf("Resources(): %d listeners, want 2", got)
	}
}

func TestTranslateInvalid(t *testing.T) {
	base := func() Mesh {
		return Mesh{
			TrustDomain: "mesh.local",
			Authz:       Authz{Address: "127.0.0.1:9191"},
			Agents: []Agent{
				{Name: "a", SPIFFEID: "spiffe://mesh.local/sa/a", InboundPort: 1, OutboundPort: 2, App: "127.0.0.1:8080",
					Peers: []Peer{{Name: "b", Addresses: []string{"127.0.0.1:3"}}}},
				{Name: "b", SPIFFEID: "spiffe://mesh.local/sa/b", InboundPort: 3, App: "127.0.0.1:8081"},
			},
		}
	}
	cred := func(c Credential) func(*Mesh) {
		return func(m *Mesh) { m.Agents[0].Peers[0].Credential = &c }
	}
	jwt := func(p JWTProvider) func(*Mesh) {
		return func(m *Mesh) { m.Agents[1].JWTProviders = append(m.Agents[1].JWTProviders, p) }
	}
	tests := []struct {
		name   string
		mutate func(*Mesh)
		want   string
	}{
		{"no trust domain", func(m *Mesh) { m.TrustDomain = "" }, "trustDomain"},
		{"agent outside trust domain", func(m *Mesh) { m.Agents[1].SPIFFEID = "spiffe://other.local/sa/b" }, "agents[1].spiffeID"},
		{"bad spiffe id", func(m *Mesh) { m.Agents[1].SPIFFEID = "spiffe://mesh.local/sa/../b" }, "agents[1].spiffeID"},
		{"no authz address", func(m *Mesh) { m.Authz.Address = "" }, "authz.address"},
		{"authz port zero", func(m *Mesh) { m.Authz.Address = "127.0.0.1:0" }, "authz.address"},
		{"authz wildcard v4", func(m *Mesh) { m.Authz.Address = "0.0.0.0:9191" }, "authz.address: address 0.0.0.0:9191: wildcard address"},
		{"authz wildcard v6", func(m *Mesh) { m.Authz.Address = "[::]:9191" }, "xds.authzAddress"},
		{"peer wildcard", func(m *Mesh) { m.Agents[0].Peers[0].Addresses = []string{"0.0.0.0:3"} }, "agents[0].peers[0].addresses[0]: address 0.0.0.0:3: wildcard address"},
		{"authz spiffe outside td", func(m *Mesh) { m.Authz.SPIFFEID = "spiffe://x.local/meshward" }, "authz.spiffeID"},
		{"unknown peer", func(m *Mesh) { m.Agents[0].Peers[0].Name = "zz" }, "unknown agent"},
		{"self peer", func(m *Mesh) { m.Agents[0].Peers[0].Name = "a" }, "its own peer"},
		{"duplicate peer", func(m *Mesh) { m.Agents[0].Peers = append(m.Agents[0].Peers, m.Agents[0].Peers[0]) }, "listed twice"},
		{"peers without outbound port", func(m *Mesh) { m.Agents[0].OutboundPort = 0 }, "outboundPort: required"},
		{"outbound equals inbound", func(m *Mesh) { m.Agents[0].OutboundPort = 1 }, "agents[0].outboundPort: port 1 is already agents[0].inboundPort"},
		{"xds server id", func(m *Mesh) { m.Agents[1].SPIFFEID = "spiffe://mesh.local/meshward/xds" }, "agents[1].spiffeID: \"spiffe://mesh.local/meshward/xds\" is under /meshward, reserved"},
		{"authz server id", func(m *Mesh) { m.Agents[1].SPIFFEID = "spiffe://mesh.local/meshward/authz" }, "reserved for meshward"},
		{"reserved path itself", func(m *Mesh) { m.Agents[1].SPIFFEID = "spiffe://mesh.local/meshward" }, "reserved for meshward"},
		{"under reserved path", func(m *Mesh) { m.Agents[1].SPIFFEID = "spiffe://mesh.local/meshward/xds/replica-2" }, "reserved for meshward"},
		{"shared spiffe id", func(m *Mesh) { m.Agents[1].SPIFFEID = m.Agents[0].SPIFFEID }, "agents[1].spiffeID: \"spiffe://mesh.local/sa/a\" is also agents[0]'s"},
		{"shared spiffe id allowed on one side only", func(m *Mesh) {
			m.Agents[1].SPIFFEID = m.Agents[0].SPIFFEID
			m.Agents[1].SharedSPIFFEID = true
		}, "set sharedSPIFFEID on both"},
		{"inbound ports collide", func(m *Mesh) { m.Agents[1].InboundPort = 1 }, "agents[1].inboundPort: port 1 is already agents[0].inboundPort on the same host (agents without host)"},
		{"outbound on another agent's app port", func(m *Mesh) { m.Agents[1].OutboundPort = 8080 }, "agents[1].outboundPort: port 8080 is already agents[0].app"},
		{"app on another agent's inbound port", func(m *Mesh) { m.Agents[1].App = "127.0.0.1:1" }, "agents[1].app: port 1 is already agents[0].inboundPort"},
		{"app on own inbound port", func(m *Mesh) { m.Agents[1].App = "localhost:3" }, "agents[1].app: port 3 is already agents[1].inboundPort"},
		{"admin ports collide", func(m *Mesh) { m.Agents[0].AdminPort = 9901; m.Agents[1].AdminPort = 9901 }, "agents[1].adminPort: port 9901 is already agents[0].adminPort"},
		{"admin on another agent's inbound", func(m *Mesh) { m.Agents[0].AdminPort = 3 }, "agents[1].inboundPort: port 3 is already agents[0].adminPort"},
		{"same named host collides", func(m *Mesh) { m.Agents[0].Host, m.Agents[1].Host, m.Agents[1].InboundPort = "h1", "h1", 1 }, "on the same host (host \"h1\")"},
		{"admin port range", func(m *Mesh) { m.Agents[0].AdminPort = 70000 }, "agents[0].adminPort: must be 1-65535"},
		{"outbound socket and port", func(m *Mesh) { m.Agents[0].OutboundSocket = "/run/a.sock" }, "agents[0].outboundSocket: exclusive with outboundPort"},
		{"outbound socket relative", func(m *Mesh) { m.Agents[0].OutboundPort, m.Agents[0].OutboundSocket = 0, "run/a.sock" }, "must be a clean absolute path"},
		{"outbound socket unclean", func(m *Mesh) { m.Agents[0].OutboundPort, m.Agents[0].OutboundSocket = 0, "/run/../a.sock" }, "must be a clean absolute path"},
		{"outbound socket without peers", func(m *Mesh) { m.Agents[1].OutboundSocket = "/run/b.sock" }, "agents[1].outboundSocket: the agent has no peers"},
		{"outbound socket open to others", func(m *Mesh) {
			m.Agents[0].OutboundPort, m.Agents[0].OutboundSocket, m.Agents[0].OutboundSocketMode = 0, "/run/a.sock", 0o666
		}, "agents[0].outboundSocketMode: 0666 must be set only with outboundSocket and give nothing to others"},
		{"outbound socket mode without socket", func(m *Mesh) { m.Agents[0].OutboundSocketMode = 0o600 }, "outboundSocketMode"},
		{"outbound sockets collide", func(m *Mesh) {
			m.Agents[0].OutboundPort, m.Agents[0].OutboundSocket = 0, "/run/x.sock"
			m.Agents[1].OutboundSocket = "/run/x.sock"
			m.Agents[1].Peers = []Peer{{Name: "a", Addresses: []string{"127.0.0.1:1"}}}
		}, "agents[1].outboundSocket: /run/x.sock is already agents[0].outboundSocket"},
		{"peer address without host", func(m *Mesh) { m.Agents[0].Peers[0].Addresses = []string{":3"} }, "missing host"},
		{"credential without secret", cred(Credential{}), "credential.secret: required"},
		{"credential reserved secret", cred(Credential{Secret: "default"}), "reserved"},
		{"credential rootca secret", cred(Credential{Secret: "ROOTCA"}), "reserved"},
		{"credential suffix format", cred(Credential{Secret: "k", Format: "%s!"}), "credential.format"},
		{"credential two verbs", cred(Credential{Secret: "k", Format: "%s %s"}), "credential.format"},
		{"credential CRLF", cred(Credential{Secret: "k", Format: "x\r\ny: %s"}), "credential.format"},
		{"credential xfcc header", cred(Credential{Secret: "k", Header: "X-Forwarded-Client-Cert"}), "cannot be injected"},
		{"credential envoy header", cred(Credential{Secret: "k", Header: "x-envoy-original-path"}), "cannot be injected"},
		{"credential bad header", cred(Credential{Secret: "k", Header: "a b"}), "not an HTTP header name"},
		{"jwt no source", jwt(JWTProvider{Name: "p", Issuer: "i"}), "one of remoteJWKS or localJWKS"},
		{"jwt both sources", jwt(JWTProvider{Name: "p", Issuer: "i", RemoteJWKS: "https://x/j", LocalJWKS: `{"keys":[{}]}`}), "exclusive"},
		{"jwt http jwks", jwt(JWTProvider{Name: "p", Issuer: "i", RemoteJWKS: "http://x/j"}), "https"},
		{"jwt local not json", jwt(JWTProvider{Name: "p", Issuer: "i", LocalJWKS: "{"}), "localJWKS"},
		{"jwt local no keys", jwt(JWTProvider{Name: "p", Issuer: "i", LocalJWKS: `{"keys":[]}`}), "no keys"},
		{"jwt no issuer", jwt(JWTProvider{Name: "p", LocalJWKS: `{"keys":[{}]}`}), "issuer: required"},
		{"jwt duplicate", func(m *Mesh) {
			p := JWTProvider{Name: "p", Issuer: "i", LocalJWKS: `{"keys":[{}]}`}
			m.Agents[1].JWTProviders = []JWTProvider{p, p}
		}, "defined twice"},
		{"credential in a JWT header", func(m *Mesh) {
			m.Agents[0].Peers[0].Credential = &Credential{Secret: "k"}
			m.Agents[1].JWTProviders = []JWTProvider{{Name: "p", Issuer: "i", LocalJWKS: `{"keys":[{}]}`}}
		}, "verifies JWTs in Authorization"},
		{"negative timeout", func(m *Mesh) { m.Options.RequestTimeout = -1 }, "options.requestTimeout"},
		{"negative authz timeout", func(m *Mesh) { m.Options.AuthzTimeout = -1 }, "options.authzTimeout: must not be negative"},
		{"stream idle below route timeout", func(m *Mesh) { m.Options.StreamIdleTimeout = 60 * time.Second },
			"options.streamIdleTimeout: 1m0s is shorter than routeTimeout 2m0s"},
		{"stream idle below request timeout", func(m *Mesh) {
			m.Options.StreamIdleTimeout, m.Options.RouteTimeout, m.Options.RequestTimeout = 60*time.Second, 30*time.Second, 90*time.Second
		}, "options.streamIdleTimeout: 1m0s is shorter than requestTimeout 1m30s"},
		{"authz timeout not below route timeout", func(m *Mesh) { m.Options.AuthzTimeout, m.Options.RouteTimeout = 5*time.Second, 5*time.Second },
			"options.authzTimeout: 5s must be shorter than routeTimeout 5s"},
		{"small window", func(m *Mesh) { m.Options.InitialStreamWindowSize = 10 }, "initialStreamWindowSize"},
		{"bad inbound address", func(m *Mesh) { m.Options.InboundAddress = "any" }, "inboundAddress"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			tc.mutate(&m)
			nodes, err := Translate(m)
			if !errors.Is(err, ErrInvalidMesh) {
				t.Fatalf("got %v, want ErrInvalidMesh", err)
			}
			if nodes != nil {
				t.Error("resources returned with an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	if _, err := Translate(base()); err != nil {
		t.Fatalf("base mesh: %v", err)
	}
	// What the checks above must not refuse.
	valid := []struct {
		name   string
		mutate func(*Mesh)
	}{
		{"shared spiffe id allowed on both", func(m *Mesh) {
			m.Agents[1].SPIFFEID = m.Agents[0].SPIFFEID
			m.Agents[0].SharedSPIFFEID, m.Agents[1].SharedSPIFFEID = true, true
		}},
		{"path only starting with meshward", func(m *Mesh) { m.Agents[1].SPIFFEID = "spiffe://mesh.local/meshwardish/b" }},
		{"meshward below the first segment", func(m *Mesh) { m.Agents[1].SPIFFEID = "spiffe://mesh.local/ns/meshward/sa/b" }},
		{"same ports on other hosts", func(m *Mesh) {
			m.Agents[1].Host, m.Agents[1].InboundPort, m.Agents[1].App = "h2", 1, "127.0.0.1:8080"
			m.Agents[0].Peers[0].Addresses = []string{"10.0.0.2:1"}
		}},
		{"remote app port not on the host", func(m *Mesh) { m.Agents[1].App = "10.0.0.9:1" }},
		{"distinct admin ports", func(m *Mesh) { m.Agents[0].AdminPort, m.Agents[1].AdminPort = 9901, 9902 }},
		{"outbound socket instead of a port", func(m *Mesh) { m.Agents[0].OutboundPort, m.Agents[0].OutboundSocket = 0, "/run/a.sock" }},
	}
	for _, tc := range valid {
		t.Run("valid/"+tc.name, func(t *testing.T) {
			m := base()
			tc.mutate(&m)
			if _, err := Translate(m); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestIsReservedSPIFFEID(t *testing.T) {
	for id, want := range map[string]bool{
		"spiffe://mesh.local/meshward/xds":      true,
		"spiffe://mesh.local/meshward/authz":    true,
		"spiffe://other.td/meshward/anything/x": true,
		"spiffe://mesh.local/meshward":          true,
		"spiffe://mesh.local/meshwardx":         false,
		"spiffe://mesh.local/ns/meshward/sa/m":  false,
		"not a spiffe id":                       false,
	} {
		if got := IsReservedSPIFFEID(id); got != want {
			t.Errorf("IsReservedSPIFFEID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestCheckAdminPort(t *testing.T) {
	agents := []Agent{
		{Name: "a", InboundPort: 15001, OutboundPort: 15101, App: "127.0.0.1:8081", AdminPort: 19001},
		{Name: "b", InboundPort: 15002, App: "127.0.0.1:8082"},
		{Name: "c", Host: "other", InboundPort: 15003, App: "127.0.0.1:8083"},
	}
	tests := []struct {
		node string
		port uint32
		want string // "" = accepted
	}{
		{"b", 19002, ""},
		{"b", 19001, "agents[0].adminPort (a)"},
		{"b", 15101, "agents[0].outboundPort (a)"},
		{"b", 8082, "agents[1].app (b)"},
		{"b", 15002, "agents[1].inboundPort (b)"},
		{"a", 19001, ""}, // its own configured port
		{"c", 15001, ""}, // another host
		{"nobody", 1, "unknown agent"},
	}
	for _, tc := range tests {
		err := CheckAdminPort(agents, tc.node, tc.port)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s:%d: %v", tc.node, tc.port, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s:%d: got %v, want an error mentioning %q", tc.node, tc.port, err, tc.want)
		}
	}
	if got := HostMates(agents, "a"); !slices.Equal(got, []string{"b"}) {
		t.Errorf("HostMates(a) = %v, want [b]", got)
	}
}

func TestSecrets(t *testing.T) {
	tests := []struct {
		name   string
		secret interface{ ValidateAll() error }
	}{
		{"tls certificate", TLSCertificateSecret(SecretDefault, []byte("chain"), []byte("key"))},
		{"validation", ValidationSecret(SecretRootCA, []byte("bundle"))},
		{"generic", GenericSecret("search-api-key", []byte("s3cret"))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.secret.ValidateAll(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if got := GenericSecret("k", []byte("v")).GetGenericSecret().GetSecret().GetInlineBytes(); string(got) != "v" {
		t.Errorf("generic secret value %q", got)
	}
	if got := TLSCertificateSecret("n", []byte("c"), []byte("k")).GetTlsCertificate(); string(got.GetCertificateChain().GetInlineBytes()) != "c" || string(got.GetPrivateKey().GetInlineBytes()) != "k" {
		t.Errorf("tls certificate %v", got)
	}
	if got := ValidationSecret("n", []byte("b")).GetValidationContext().GetTrustedCa().GetInlineBytes(); string(got) != "b" {
		t.Errorf("trusted ca %q", got)
	}
}

// TestInboundHardening spells out the security-relevant settings that the
// golden files show only implicitly (proto3 JSON omits false and zero).
func TestInboundHardening(t *testing.T) {
	m := loadMesh(t, filepath.Join("testdata", "in", "jwt.yaml"))
	nr, err := TranslateAgent(m, "planner")
	if err != nil {
		t.Fatal(err)
	}
	l := nr.Listeners[0]
	var hcm hcmv3.HttpConnectionManager
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	var tlsCtx tlsv3.DownstreamTlsContext
	if err := l.GetFilterChains()[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(&tlsCtx); err != nil {
		t.Fatal(err)
	}
	filters := hcm.GetHttpFilters()
	var names []string
	for _, f := range filters {
		names = append(names, f.GetName())
	}
	if want := []string{JWTFilterName, extAuthzName, routerName}; !slices.Equal(names, want) {
		t.Fatalf("filters %v, want %v", names, want)
	}
	var az extauthzv3.ExtAuthz
	if err := filters[1].GetTypedConfig().UnmarshalTo(&az); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"client certificate required", tlsCtx.GetRequireClientCertificate().GetValue()},
		{"TLS 1.2 minimum", tlsCtx.GetCommonTlsContext().GetTlsParams().GetTlsMinimumProtocolVersion() == tlsv3.TlsParameters_TLSv1_2},
		{"normalize_path", hcm.GetNormalizePath().GetValue()},
		{"merge_slashes", hcm.GetMergeSlashes()},
		{"escaped slashes rejected", hcm.GetPathWithEscapedSlashesAction() == hcmv3.HttpConnectionManager_REJECT_REQUEST},
		{"underscore headers rejected", hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction() == corev3.HttpProtocolOptions_REJECT_REQUEST},
		{"XFCC SANITIZE_SET", hcm.GetForwardClientCertDetails() == hcmv3.HttpConnectionManager_SANITIZE_SET},
		{"XFCC URI", hcm.GetSetCurrentClientCertDetails().GetUri()},
		{"use_remote_address", hcm.GetUseRemoteAddress().GetValue()},
		{"failure_mode_allow false", !az.GetFailureModeAllow()},
		{"status_on_error 403", az.GetStatusOnError().GetCode() == typev3.StatusCode_Forbidden},
		{"no partial body", !az.GetWithRequestBody().GetAllowPartialMessage() && az.GetWithRequestBody().GetMaxRequestBytes() > 0},
		{"body packed as bytes", az.GetWithRequestBody().GetPackAsBytes()},
		{"peer certificate sent", az.GetIncludePeerCertificate()},
		{"transport V3", az.GetTransportApiVersion() == corev3.ApiVersion_V3},
		{"jwt metadata forwarded", slices.Contains(az.GetMetadataContextNamespaces(), JWTFilterName)},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: not set", c.name)
		}
	}
}

// TestTimeoutsAndLimits: the defaults are consistent (a reply slower than
// the idle timeout but within the route timeout is not cut), each knob
// reaches its field, routes wait for RDS like certificates for SDS, and
// the ext_authz cluster has explicit circuit breakers.
func TestTimeoutsAndLimits(t *testing.T) {
	var zero Options
	if err := zero.Validate("options"); err != nil {
		t.Fatalf("defaults inconsistent: %v", err)
	}
	d := Mesh{}.withDefaults().Options
	if d.StreamIdleTimeout < d.RouteTimeout || d.StreamIdleTimeout < d.RequestTimeout || d.AuthzTimeout >= d.RouteTimeout {
		t.Errorf("defaults: idle %v, route %v, request %v, authz %v", d.StreamIdleTimeout, d.RouteTimeout, d.RequestTimeout, d.AuthzTimeout)
	}
	m := loadMesh(t, filepath.Join("testdata", "in", "quickstart.yaml"))
	m.Options = Options{RequestTimeout: 40 * time.Second, RouteTimeout: 50 * time.Second, StreamIdleTimeout: 70 * time.Second,
		AuthzTimeout: 300 * time.Millisecond, MaxRequestBytes: 4096, AuthzCircuitBreakers: CircuitBreakers{MaxRequests: 77}}
	nr, err := TranslateAgent(m, "planner")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range nr.Listeners {
		var hcm hcmv3.HttpConnectionManager
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
			t.Fatal(err)
		}
		if got := hcm.GetRequestTimeout().AsDuration(); got != 40*time.Second {
			t.Errorf("%s: request_timeout %v", l.GetName(), got)
		}
		if got := hcm.GetStreamIdleTimeout().AsDuration(); got != 70*time.Second {
			t.Errorf("%s: stream_idle_timeout %v", l.GetName(), got)
		}
		ift := hcm.GetRds().GetConfigSource().GetInitialFetchTimeout()
		if ift == nil || ift.AsDuration() != 0 {
			t.Errorf("%s: RDS initial_fetch_timeout %v, want an explicit 0 (Envoy's default is 15 s)", l.GetName(), ift)
		}
		if l.GetName() != ListenerInbound {
			continue
		}
		var az extauthzv3.ExtAuthz
		for _, f := range hcm.GetHttpFilters() {
			if f.GetName() == extAuthzName {
				if err := f.GetTypedConfig().UnmarshalTo(&az); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got := az.GetGrpcService().GetTimeout().AsDuration(); got != 300*time.Millisecond {
			t.Errorf("ext_authz timeout %v", got)
		}
		if got := az.GetWithRequestBody().GetMaxRequestBytes(); got != 4096 {
			t.Errorf("ext_authz max_request_bytes %d", got)
		}
	}
	for _, r := range nr.Routes {
		if got := r.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetTimeout().AsDuration(); got != 50*time.Second {
			t.Errorf("route %s timeout %v, want routeTimeout", r.GetName(), got)
		}
	}
	for _, c := range nr.Clusters {
		if c.GetName() != ClusterAuthz {
			continue
		}
		th := c.GetCircuitBreakers().GetThresholds()
		if len(th) != 1 || th[0].GetMaxRequests().GetValue() != 77 || th[0].GetMaxConnections().GetValue() != DefaultAuthzMaxConnections ||
			th[0].GetMaxPendingRequests().GetValue() != DefaultAuthzMaxPendingRequests || th[0].GetMaxRetries().GetValue() != DefaultAuthzMaxRetries {
			t.Errorf("authz circuit breakers %v", th)
		}
	}
}

// TestOutboundSocket: an agent with outboundSocket gets its outbound
// listener on that unix socket, with the configured mode or 0600, and no
// port.
func TestOutboundSocket(t *testing.T) {
	m := loadMesh(t, filepath.Join("testdata", "in", "unix-outbound.yaml"))
	for _, tc := range []struct {
		mode, want uint32
	}{{0o660, 0o660}, {0, DefaultOutboundSocketMode}} {
		m.Agents[0].OutboundSocketMode = tc.mode
		nr, err := TranslateAgent(m, "planner")
		if err != nil {
			t.Fatal(err)
		}
		var out *listenerv3.Listener
		for _, l := range nr.Listeners {
			if l.GetName() == ListenerOutbound {
				out = l
			}
		}
		if out == nil {
			t.Fatal("no outbound listener")
		}
		pipe := out.GetAddress().GetPipe()
		if pipe.GetPath() != "/run/meshward/planner/outbound.sock" || pipe.GetMode() != tc.want || out.GetAddress().GetSocketAddress() != nil {
			t.Errorf("mode %#o: outbound address %v, want the socket with mode %#o", tc.mode, out.GetAddress(), tc.want)
		}
		mustValidate(t, "outbound", out, nil)
	}
}

// TestDeepValidateCatchesNested proves the golden checks can fail: an
// invalid message inside an Any is reported.
func TestDeepValidateCatchesNested(t *testing.T) {
	bad := &hcmv3.HttpConnectionManager{} // stat_prefix is required
	a, err := anypb.New(bad)
	if err != nil {
		t.Fatal(err)
	}
	l := &listenerv3.Listener{Name: "x", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
		Name: hcmFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a},
	}}}}}
	if errs := deepValidate("x", l, nil); len(errs) == 0 {
		t.Error("an invalid HttpConnectionManager inside an Any was not reported")
	}
}
