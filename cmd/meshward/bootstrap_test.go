package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"encoding/json"

	"github.com/meshward/meshward/envoy"
)

// parseBootstrap reads the printed YAML the way Envoy does and validates it.
func parseBootstrap(t *testing.T, y string) *bootstrapv3.Bootstrap {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(y), &v); err != nil {
		t.Fatalf("output is not YAML: %v", err)
	}
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatalf("output is not a Bootstrap: %v", err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	return &bs
}

func TestBootstrapCommand(t *testing.T) {
	dir := t.TempDir()
	// A mesh with mTLS xDS and a persisted local CA, from the quickstart.
	qs, err := os.ReadFile(quickstartPath)
	if err != nil {
		t.Fatal(err)
	}
	mtls := strings.Replace(string(qs), "  insecure: true\n", "", 1)
	mtls = strings.Replace(mtls, "  source: local\n", "  source: local\n  local:\n    dataDir: "+filepath.Join(dir, "ca")+"\n", 1)
	if mtls == string(qs) {
		t.Fatal("test setup: could not edit the quickstart")
	}
	if err := os.MkdirAll(filepath.Join(dir, "schemas"), 0o700); err != nil {
		t.Fatal(err)
	}
	schema, err := os.ReadFile(filepath.Join(filepath.Dir(quickstartPath), "schemas", "task.request.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "schemas", "task.request.json"), schema, 0o600); err != nil {
		t.Fatal(err)
	}
	mtlsPath := filepath.Join(dir, "meshward.yaml")
	if err := os.WriteFile(mtlsPath, []byte(mtls), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantErr    string
		wantTLS    bool
		wantFiles  []string
		outDir     string
		wantStderr string
		wantNode   string // default: --node's value
	}{
		{name: "quickstart planner", args: []string{"bootstrap", "--node", "planner", "--admin-port", "19001"}, wantStderr: "insecure"},
		{name: "default admin port on a shared host", args: []string{"bootstrap", "--node", "planner"}, wantCode: 1,
			wantErr: "planner shares its host with viewer, executor, whose Envoys would also take the default admin port 9901"},
		{name: "admin port of another agent", args: []string{"bootstrap", "--node", "planner", "--admin-port", "15003"}, wantCode: 1,
			wantErr: "admin port 15003 is already agents[2].inboundPort (executor)"},
		{name: "admin port of an app", args: []string{"bootstrap", "--node", "planner", "--admin-port", "8082"}, wantCode: 1,
			wantErr: "admin port 8082 is already agents[1].app (viewer)"},
		{name: "admin socket", args: []string{"bootstrap", "--node", "planner", "--admin-socket", "/run/planner-admin.sock"}, wantStderr: "insecure"},
		{name: "watch without out", args: []string{"bootstrap", "--node", "planner", "--admin-port", "19001", "--watch"}, wantCode: 1, wantErr: "--watch needs --out"},
		{name: "watch insecure", args: []string{"bootstrap", "--node", "planner", "--admin-port", "19001", "--watch"}, outDir: "watch-insecure", wantCode: 1,
			wantErr: "with xds.insecure there is none"},
		{name: "pod node id", args: []string{"bootstrap", "--node", "planner", "--admin-port", "19001", "--pod-name", "planner-7d9f5-x2k4q", "--pod-namespace", "agents"},
			wantStderr: "insecure", wantNode: "planner.planner-7d9f5-x2k4q.agents"},
		{name: "pod name without namespace", args: []string{"bootstrap", "--node", "planner", "--admin-port", "19001", "--pod-name", "planner-0"}, wantCode: 1, wantErr: "--pod-name and --pod-namespace go together"},
		{name: "bad pod name", args: []string{"bootstrap", "--node", "planner", "--admin-port", "19001", "--pod-name", "Planner_0", "--pod-namespace", "agents"}, wantCode: 1,
			wantErr: `pod name "Planner_0" is not a DNS subdomain`},
		{name: "bad pod namespace", args: []string{"bootstrap", "--node", "planner", "--admin-port", "19001", "--pod-name", "planner-0", "--pod-namespace", "a.b"}, wantCode: 1,
			wantErr: "the agent and the namespace must be DNS labels"},
		{name: "admin socket and port", args: []string{"bootstrap", "--node", "planner", "--admin-socket", "/a.sock", "--admin-port", "19001"}, wantCode: 1, wantErr: "exclusive"},
		{name: "quickstart file executor", args: []string{"bootstrap", "--node", "executor", "--config", quickstartPath, "--admin-port", "19003"}},
		{name: "unknown node", args: []string{"bootstrap", "--node", "nobody"}, wantCode: 1, wantErr: `unknown agent "nobody" in embedded quickstart: its agents are planner, viewer, executor`},
		{name: "no node", args: []string{"bootstrap"}, wantCode: 1, wantErr: "--node is required"},
		{name: "bad admin port", args: []string{"bootstrap", "--node", "planner", "--admin-port", "0"}, wantCode: 1, wantErr: "--admin-port"},
		{name: "wildcard xds address", args: []string{"bootstrap", "--node", "planner", "--config", wildcardXDS(t, qs, dir), "--admin-port", "19001"}, wantCode: 1,
			wantErr: "--xds-address is required: xds.address 0.0.0.0:18000"},
		{name: "wildcard xds address overridden", args: []string{"bootstrap", "--node", "planner", "--config", wildcardXDS(t, qs, dir), "--admin-port", "19001", "--xds-address", "meshward.internal:18000"},
			wantStderr: "insecure"},
		{name: "mtls printed", args: []string{"bootstrap", "--node", "viewer", "--config", mtlsPath, "--admin-port", "19002"}, wantTLS: true},
		{name: "quickstart out", args: []string{"bootstrap", "--node", "planner", "--admin-port", "19001"}, outDir: "insecure-out", wantFiles: []string{"envoy.yaml"}},
		{name: "mtls out", args: []string{"bootstrap", "--node", "planner", "--config", mtlsPath, "--admin-port", "19001"}, outDir: "planner", wantTLS: true,
			wantFiles: []string{"envoy.yaml", envoy.XDSCertFile, envoy.XDSKeyFile, envoy.XDSCAFile, envoy.XDSClientSDSFile, envoy.XDSCASDSFile}},
		{name: "mtls out without data dir", args: []string{"bootstrap", "--node", "planner", "--config", quickstartPathNoInsecure(t, qs, dir), "--admin-port", "19001"},
			outDir: "nodata", wantCode: 1, wantErr: "secrets.local.dataDir"},
		{name: "failed out leaves no nested folders", args: []string{"bootstrap", "--node", "planner", "--config", quickstartPathNoInsecure(t, qs, dir), "--admin-port", "19001"},
			outDir: filepath.Join("deep", "er", "nodata"), wantCode: 1, wantErr: "secrets.local.dataDir"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			out := ""
			if tc.outDir != "" {
				out = filepath.Join(dir, tc.outDir)
				args = append(append([]string{}, args...), "--out", out)
			}
			code, stdout, stderr := runCmd(t, args...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.wantCode, stderr)
			}
			if tc.wantErr != "" {
				if !strings.Contains(stderr, tc.wantErr) {
					t.Errorf("stderr %q does not mention %q", stderr, tc.wantErr)
				}
				if out != "" {
					if _, err := os.Stat(out); !os.IsNotExist(err) {
						t.Errorf("a failed --out left %s behind (stat: %v)", out, err)
					}
				}
				return
			}
			if !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr %q does not mention %q", stderr, tc.wantStderr)
			}
			bs := parseBootstrap(t, stdout)
			node := args[2]
			if tc.wantNode != "" {
				node = tc.wantNode
			}
			if v := envoy.MinEnvoyVersion; !strings.HasPrefix(stdout, fmt.Sprintf("# Envoy bootstrap of node %s, from meshward bootstrap. Needs Envoy %d.%d.%d or later", node, v[0], v[1], v[2])) {
				t.Errorf("the bootstrap does not start with the minimum Envoy version:\n%.200s", stdout)
			}
			if bs.GetNode().GetId() != node {
				t.Errorf("node id %q, want %q", bs.GetNode().GetId(), node)
			}
			if got := bs.GetStaticResources().GetClusters()[0].GetTransportSocket() != nil; got != tc.wantTLS {
				t.Errorf("xDS over TLS = %v, want %v", got, tc.wantTLS)
			}
			if tc.wantTLS && !strings.Contains(stdout, "exact: spiffe://mesh.local/meshward/xds\n") {
				t.Error("the xDS server's SPIFFE ID is not pinned")
			}
			for _, f := range tc.wantFiles {
				if _, err := os.Stat(filepath.Join(out, f)); err != nil {
					t.Error(err)
				}
			}
			if out == "" {
				return
			}
			written, err := os.ReadFile(filepath.Join(out, "envoy.yaml"))
			if err != nil || string(written) != stdout {
				t.Errorf("envoy.yaml differs from the printed bootstrap (%v)", err)
			}
			if !tc.wantTLS {
				return
			}
			checkIssued(t, out, "spiffe://mesh.local/ns/default/sa/planner")
			if !strings.Contains(stdout, filepath.Join(out, envoy.XDSClientSDSFile)) {
				t.Error("bootstrap does not read the SDS file from --out")
			}
		})
	}
}

// wildcardXDS writes the quickstart with xDS listening on 0.0.0.0.
func wildcardXDS(t *testing.T, qs []byte, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "wildcard.yaml")
	edited := strings.Replace(string(qs), "  address: 127.0.0.1:18000\n", "  address: 0.0.0.0:18000\n", 1)
	if edited == string(qs) {
		t.Fatal("test setup: could not edit the quickstart")
	}
	if err := os.WriteFile(p, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// quickstartPathNoInsecure writes the quickstart with mTLS xDS and an
// in-memory local CA.
func quickstartPathNoInsecure(t *testing.T, qs []byte, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "nodata.yaml")
	if err := os.WriteFile(p, []byte(strings.Replace(string(qs), "  insecure: true\n", "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkIssued verifies the written certificate against the written CA, its
// SPIFFE ID, and that the key file is private.
func checkIssued(t *testing.T, dir, spiffeID string) {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	block, _ := pem.Decode(read(envoy.XDSCertFile))
	if block == nil {
		t.Fatal("no certificate PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != spiffeID {
		t.Errorf("certificate URIs %v, want %s", cert.URIs, spiffeID)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(read(envoy.XDSCAFile)) {
		t.Fatal("no CA in the bundle")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate does not verify against the written CA: %v", err)
	}
	if block, _ := pem.Decode(read(envoy.XDSKeyFile)); block == nil {
		t.Error("no key PEM")
	}
	info, err := os.Stat(filepath.Join(dir, envoy.XDSKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", info.Mode().Perm())
	}
}

// TestBootstrapExamples keeps examples/envoy in step with the command: the
// checked-in bootstraps are exactly what it prints for the quickstart.
func TestBootstrapExamples(t *testing.T) {
	for node, port := range map[string]string{"planner": "19001", "viewer": "19002", "executor": "19003"} {
		t.Run(node, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, "bootstrap", "--node", node, "--admin-port", port)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			path := filepath.Join("..", "..", "examples", "envoy", node+".yaml")
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if stdout != string(want) {
				t.Errorf("%s is stale: regenerate it with meshward bootstrap --node %s --admin-port %s > %s", path, node, port, path)
			}
		})
	}
}

func TestFirstMissing(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ dir, want string }{
		{dir, ""},
		{filepath.Join(dir, "a"), filepath.Join(dir, "a")},
		{filepath.Join(dir, "a", "b", "c"), filepath.Join(dir, "a")},
	} {
		if got := firstMissing(tc.dir); got != tc.want {
			t.Errorf("firstMissing(%s) = %q, want %q", tc.dir, got, tc.want)
		}
	}
}
