package extauthz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshward/meshward/examples/quickstart"
	"github.com/meshward/meshward/policy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const td = "mesh.local"

func spiffe(name string) string { return "spiffe://mesh.local/ns/default/sa/" + name }

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// testPolicy is the quickstart's identities with rules for every path the
// tests exercise.
func testPolicy() policy.Config {
	return policy.Config{
		Identities: []policy.Identity{
			{SPIFFEID: spiffe("planner"), Roles: []string{"operator"}, Attributes: map[string]string{"department": "engineering", "clearance": "high", "region": "us"}},
			{SPIFFEID: spiffe("viewer"), Roles: []string{"viewer"}, Attributes: map[string]string{"department": "sales", "clearance": "low", "region": "eu"}},
		},
		Levels: map[string][]string{"clearance": {"low", "medium", "high"}},
		Rules: []policy.Rule{
			{Name: "create-task", Match: policy.Match{Methods: []string{"POST"}, Path: "/v1/tasks"},
				Require: policy.Require{AnyRole: []string{"admin", "operator"}, Attributes: map[string]policy.ValueRequirement{
					"department": {Equals: "engineering"}, "clearance": {AtLeast: "high"}, "region": {Equals: "us"}}}},
			{Name: "list-tasks", Match: policy.Match{Methods: []string{"GET"}, Path: "/v1/tasks"},
				Require: policy.Require{AnyRole: []string{"admin", "operator", "viewer"}}},
			{Name: "host-only", Match: policy.Match{Methods: []string{"GET"}, Path: "/v1/host", Hosts: []string{"executor.mesh.local"}}},
			{Name: "debug", Match: policy.Match{Methods: []string{"TRACE"}, Path: "/debug"}},
			{Name: "mfa", Match: policy.Match{Methods: []string{"GET"}, Path: "/v1/mfa"},
				Require: policy.Require{Claims: map[string]policy.ValueRequirement{"amr": {Contains: "mfa"}}}},
		},
	}
}

func newStore(t testing.TB, cfg policy.Config, opts policy.Options) *policy.Store {
	t.Helper()
	s, err := policy.NewStore(policy.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(context.Background(), func() (*policy.Revision, error) { return policy.Compile(&cfg, td, opts) }); err != nil {
		t.Fatal(err)
	}
	return s
}

func plainConfig() Config {
	return Config{Address: "127.0.0.1:0", Plaintext: true}
}

func newServer(t testing.TB, cfg Config, d Decider, opts Options) *Server {
	t.Helper()
	s, err := New(cfg, td, d, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkReq builds a CheckRequest as Envoy sends it for an mTLS caller.
func checkReq(principal, method, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":authority": "executor.mesh.local", ":method": method, ":path": path}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Principal: principal},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: method, Path: path, Host: "executor.mesh.local", Headers: h,
		}},
	}}
}

// headerMapReq moves a request's headers to header_map (encode_raw_headers).
func headerMapReq(r *authv3.CheckRequest, extra ...[2]string) *authv3.CheckRequest {
	h := r.Attributes.Request.Http
	hm := &corev3.HeaderMap{}
	for k, v := range h.Headers {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	for _, kv := range extra {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[0], RawValue: []byte(kv[1])})
	}
	h.Headers, h.HeaderMap = nil, hm
	return r
}

func loadRefRequest(t testing.TB, name string) *authv3.CheckRequest {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "refload", name))
	if err != nil {
		t.Fatal(err)
	}
	r := &authv3.CheckRequest{}
	if err := protojson.Unmarshal(raw, r); err != nil {
		t.Fatal(err)
	}
	return r
}

// quickstartPolicy reads the authz section of the embedded quickstart.
func quickstartPolicy(t testing.TB) (Config, policy.Config) {
	t.Helper()
	var doc struct {
		Authz struct {
			Server Config        `yaml:",inline"`
			Policy policy.Config `yaml:",inline"`
		} `yaml:"authz"`
	}
	if err := yaml.Unmarshal(quickstart.Config, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Authz.Server, doc.Authz.Policy
}

// acceptBodies stands in for the schema step where a test or benchmark is
// about the declarative path only.
type acceptBodies struct{}

func (acceptBodies) CheckBody(*policy.Rule, *policy.Input) policy.BodyResult {
	return policy.BodyResult{OK: true}
}

func withAcceptBodies() policy.Options {
	return policy.Options{NewBodyChecker: func(*policy.Config, fs.FS) (policy.BodyChecker, error) { return acceptBodies{}, nil }}
}

type certSpec struct {
	uris   []string
	isCA   bool
	ekus   []x509.ExtKeyUsage
	urlEnc bool
	notPEM bool
}

// makeCert returns a PEM (optionally URL-encoded, as Envoy sends it)
// certificate signed by a throwaway CA.
func makeCert(t testing.TB, spec certSpec) string {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: spec.ekus, IsCA: spec.isCA, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature}
	for _, u := range spec.uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		leaf.URIs = append(leaf.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if spec.notPEM {
		return "garbage"
	}
	p := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	if spec.urlEnc {
		return url.PathEscape(p)
	}
	return p
}

var clientEKU = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
