package policy

import (
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestRegoConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  RegoConfig
		want []string // substrings of the joined error; none: valid
	}{
		{name: "files", cfg: RegoConfig{Files: []string{"policy.rego"}}},
		{name: "bundle file", cfg: RegoConfig{Bundle: "b.tar.gz"}},
		{name: "bundle url", cfg: RegoConfig{BundleURL: "https://bundles.example/authz.tar.gz"}},
		{name: "bundle url with files and signing", cfg: RegoConfig{Files: []string{"data.json"}, BundleURL: "https://bundles.example/b.tar.gz",
			PollInterval: 5 * time.Second, Verification: &RegoVerification{KeyFile: "k.pem"}}},
		{name: "bundle url http loopback", cfg: RegoConfig{BundleURL: "http://127.0.0.1:8181/b.tar.gz"}},
		{name: "bundle url http localhost", cfg: RegoConfig{BundleURL: "http://localhost/b.tar.gz"}},
		{name: "bundle url http ipv6 loopback", cfg: RegoConfig{BundleURL: "http://[::1]:8181/b.tar.gz"}},
		{name: "bundle url http remote", cfg: RegoConfig{BundleURL: "http://bundles.example/b.tar.gz"},
			want: []string{"authz.rego.bundleURL:", "use https"}},
		{name: "bundle url scheme", cfg: RegoConfig{BundleURL: "ftp://bundles.example/b.tar.gz"}, want: []string{"authz.rego.bundleURL:", "scheme must be https"}},
		{name: "bundle url without host", cfg: RegoConfig{BundleURL: "https:///b.tar.gz"}, want: []string{"authz.rego.bundleURL:", "no host"}},
		{name: "bundle url and bundle", cfg: RegoConfig{Bundle: "b.tar.gz", BundleURL: "https://bundles.example/b.tar.gz"},
			want: []string{"authz.rego.bundleURL: set bundle or bundleURL, not both"}},
		{name: "poll interval too short", cfg: RegoConfig{BundleURL: "https://bundles.example/b.tar.gz", PollInterval: 500 * time.Millisecond},
			want: []string{"authz.rego.pollInterval: must be at least 1s"}},
		{name: "bundle tls", cfg: RegoConfig{BundleURL: "https://b.example/b.tar.gz", BundleTLS: &RegoBundleTLS{CA: "ca.pem", Cert: "c.pem", Key: "k.pem"}}},
		{name: "bundle tls ca only", cfg: RegoConfig{BundleURL: "https://b.example/b.tar.gz", BundleTLS: &RegoBundleTLS{CA: "ca.pem"}}},
		{name: "bundle tls without url", cfg: RegoConfig{Files: []string{"p"}, BundleTLS: &RegoBundleTLS{CA: "ca.pem"}},
			want: []string{"authz.rego.bundleTLS: only applies with bundleURL"}},
		{name: "bundle tls cert without key", cfg: RegoConfig{BundleURL: "https://b.example/b.tar.gz", BundleTLS: &RegoBundleTLS{Cert: "c.pem"}},
			want: []string{"authz.rego.bundleTLS: set cert and key together"}},
		{name: "bundle tls empty", cfg: RegoConfig{BundleURL: "https://b.example/b.tar.gz", BundleTLS: &RegoBundleTLS{}},
			want: []string{"authz.rego.bundleTLS: set ca, or cert and key"}},
		{name: "path query", cfg: RegoConfig{Files: []string{"p"}, Query: "envoy/authz/allow"}},
		{name: "signed bundle", cfg: RegoConfig{Bundle: "b.tar.gz", Verification: &RegoVerification{KeyFile: "k.pem"}}},
		{name: "nothing", cfg: RegoConfig{}, want: []string{"authz.rego: set files, bundle or bundleURL"}},
		{name: "empty file", cfg: RegoConfig{Files: []string{" "}}, want: []string{"authz.rego.files[0]: empty path"}},
		{name: "not a tarball", cfg: RegoConfig{Bundle: "a.zip"}, want: []string{"authz.rego.bundle:"}},
		{name: "poll interval without url", cfg: RegoConfig{Files: []string{"p"}, PollInterval: time.Minute}, want: []string{"authz.rego.pollInterval: only applies with bundleURL"}},
		{name: "bad query", cfg: RegoConfig{Files: []string{"p"}, Query: "data"}, want: []string{"authz.rego.query"}},
		{name: "negative size", cfg: RegoConfig{Files: []string{"p"}, MaxBundleBytes: -1}, want: []string{"authz.rego.maxBundleBytes"}},
		{
			name: "verification problems",
			cfg:  RegoConfig{Files: []string{"p"}, Verification: &RegoVerification{Algorithm: "none"}},
			want: []string{"authz.rego.verification: only applies with bundle or bundleURL", "authz.rego.verification.keyFile: required", "authz.rego.verification.algorithm"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.SetDefaults()
			err := cfg.Validate("authz.rego")
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("valid, want %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestRegoConfigDefaults(t *testing.T) {
	c := RegoConfig{Bundle: "b.tar.gz", Verification: &RegoVerification{KeyFile: "k"}}
	c.SetDefaults()
	if c.Query != "data.envoy.authz.allow" || c.Verification.Algorithm != "RS256" || c.PollInterval != 0 {
		t.Fatalf("defaults: %+v", c)
	}
	u := RegoConfig{BundleURL: "https://bundles.example/b.tar.gz"}
	u.SetDefaults()
	if u.PollInterval != time.Minute {
		t.Fatalf("bundleURL pollInterval default %v, want 1m", u.PollInterval)
	}
}

func TestRegoConfigOPAConfig(t *testing.T) {
	dir := fstest.MapFS{"keys/pub.pem": {Data: []byte("PEM")}}
	c := RegoConfig{Files: []string{"p.rego"}, Bundle: "b.tar.gz", Query: "envoy/authz/allow",
		Verification: &RegoVerification{KeyID: "k1", KeyFile: "keys/pub.pem", Algorithm: "ES256"}}
	got, err := c.opaConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.BundleFile != "b.tar.gz" || got.Files[0] != "p.rego" || got.Query != "envoy/authz/allow" ||
		got.Verification.Key != "PEM" || got.Verification.KeyID != "k1" || got.Verification.Algorithm != "ES256" {
		t.Fatalf("%+v", got)
	}
	c.Verification.KeyFile = "missing.pem"
	if _, err := c.opaConfig(dir); err == nil {
		t.Fatal("missing key file accepted")
	}
}
