package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshward/meshward/cmd/meshward/internal/admin"
	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/examples/quickstart"
	"github.com/meshward/meshward/extauthz"
	"github.com/meshward/meshward/xds"
)

// validate accepts, but warns of, every setting that leaves a listener
// open to whoever reaches it: the same warnings serve logs at start.
func TestValidateWarnsOfOpenListeners(t *testing.T) {
	qs, err := os.ReadFile(quickstartPath)
	if err != nil {
		t.Fatal(err)
	}
	schema, err := os.ReadFile(filepath.Join(filepath.Dir(quickstartPath), "schemas", "task.request.json"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(t *testing.T, yaml string) string {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "schemas"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "schemas", "task.request.json"), schema, 0o600); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "meshward.yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secure := strings.NewReplacer("  plaintext: true\n", "  tls: {fromSecrets: true}\n", "  insecure: true\n", "  insecure: false\n").Replace(string(qs))
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		{"quickstart: plaintext ext_authz and insecure xDS", string(qs), []string{extauthz.WarnPlaintext, xds.WarnInsecure}},
		{"admin on 0.0.0.0", strings.Replace(secure, "address: 127.0.0.1:9090", "address: 0.0.0.0:9090", 1), []string{admin.WarnWildcard}},
		{"admin on :9090", strings.Replace(secure, "address: 127.0.0.1:9090", `address: ":9090"`, 1), []string{admin.WarnWildcard}},
		{"nothing open", secure, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCmd(t, "validate", "--config", write(t, tc.yaml))
			if code != 0 || !strings.Contains(out, ": ok") {
				t.Fatalf("validate = %d, %q; stderr:\n%s", code, out, errs)
			}
			for _, w := range []string{admin.WarnWildcard, extauthz.WarnPlaintext, xds.WarnInsecure} {
				want := slices.Contains(tc.want, w)
				if got := strings.Contains(errs, "meshward: warning: "+w); got != want {
					t.Errorf("warned %q: %v, want %v; stderr:\n%s", w, got, want, errs)
				}
			}
		})
	}
}

// The connection limits are keys of the serve configuration, decoded
// strictly and validated with their paths.
func TestLimitsInConfig(t *testing.T) {
	qs, err := os.ReadFile(quickstartPath)
	if err != nil {
		t.Fatal(err)
	}
	withLimits := func(authz, xdsLimits string) []byte {
		s := strings.Replace(string(qs), "  plaintext: true\n", "  plaintext: true\n"+authz, 1)
		return []byte(strings.Replace(s, "  insecure: true\n", "  insecure: true\n"+xdsLimits, 1))
	}
	cfg, err := config.Parse(withLimits("  maxHeaderListBytes: 8192\n  maxConcurrentStreams: 100\n  maxConnections: 50\n",
		"  maxHeaderListBytes: 4096\n  maxConcurrentStreams: 4\n  maxConnections: 20\n"), quickstart.Files, "test")
	if err != nil {
		t.Fatal(err)
	}
	a, x := cfg.Authz.Server, cfg.XDS
	if a.MaxHeaderListBytes != 8192 || a.MaxConcurrentStreams != 100 || a.MaxConnections != 50 ||
		x.MaxHeaderListBytes != 4096 || x.MaxConcurrentStreams != 4 || x.MaxConnections != 20 {
		t.Fatalf("limits decoded as authz %+v, xds %+v", a, x)
	}
	_, err = config.Parse(withLimits("  maxConnections: -1\n", "  maxHeaderListBytes: 99999999\n"), quickstart.Files, "test")
	for _, want := range []string{"authz.maxConnections", "xds.maxHeaderListBytes"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("invalid limits: %v, want an error naming %s", err, want)
		}
	}
}
