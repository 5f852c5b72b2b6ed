package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func TestQuickstartIsValid(t *testing.T) {
	c, err := Quickstart()
	if err != nil {
		t.Fatalf("Quickstart() = %v", err)
	}
	if c.TrustDomain != "mesh.local" {
		t.Errorf("trustDomain = %q, want mesh.local", c.TrustDomain)
	}
	var names []string
	for _, a := range c.Agents {
		names = append(names, a.Name)
	}
	if got := strings.Join(names, ","); got != "planner,viewer,executor" {
		t.Errorf("agents = %s, want planner,viewer,executor", got)
	}
	if c.Admin.Address != DefaultAdminAddress {
		t.Errorf("admin address = %q, want the default %q", c.Admin.Address, DefaultAdminAddress)
	}
}

func TestLoadQuickstartFileFromDisk(t *testing.T) {
	if _, err := Load(filepath.Join("..", "..", "..", "..", "examples", "quickstart", "meshward.yaml")); err != nil {
		t.Fatalf("Load(examples/quickstart/meshward.yaml) = %v", err)
	}
}

const minimal = `trustDomain: mesh.local
authz:
  plaintext: true
  rules:
    - name: a
      match: {methods: [GET], path: /a}
    - name: b
      match: {methods: [GET], path: /b}
    - name: c
      match: {methods: [GET], path: /c}
`

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // every one must appear
	}{
		{
			name: "unknown key named by path",
			yaml: strings.Replace(minimal, "    - name: c\n      match:", "    - name: c\n      matchh:", 1),
			want: []string{"authz.rules[2].matchh: unknown field"},
		},
		{
			name: "every unknown key reported",
			yaml: minimal + "colour: blue\nadmin:\n  adress: x\n", //nolint:misspell // the misspelt key is what this case tests
			want: []string{"colour: unknown field", "admin.adress: unknown field"},
		},
		{
			name: "three errors reported at once",
			yaml: `trustDomain: Mesh.Local
authz:
  plaintext: true
  rules:
    - name: a
      effect: maybe
      match: {path: nopath}
`,
			want: []string{"trustDomain:", "authz.rules[0].effect:", "authz.rules[0].match: path \"nopath\" must start with /"},
		},
		{
			name: "unknown schema and bad level",
			yaml: `trustDomain: mesh.local
authz:
  rules:
    - name: a
      schema: nope
      require:
        attributes:
          clearance: {atLeast: high}
`,
			want: []string{"authz.rules[0].schema: unknown schema \"nope\"", "authz.rules[0].require.attributes.clearance.atLeast: no levels declared"},
		},
		{
			name: "identity outside the trust domain",
			yaml: "trustDomain: mesh.local\nauthz:\n  identities:\n    - spiffeID: spiffe://other/ns/a\n",
			want: []string{"authz.identities[0].spiffeID:", "not in trust domain"},
		},
		{
			name: "agents cross-checked",
			yaml: `trustDomain: mesh.local
agents:
  - name: a
    spiffeID: spiffe://mesh.local/a
    inboundPort: 1
    app: 127.0.0.1:1
    peers: [{name: ghost, addresses: [x:1]}]
  - name: a
    spiffeID: spiffe://elsewhere/a
    inboundPort: 0
    app: nope
`,
			want: []string{"agents[0].peers[0].name: unknown agent \"ghost\"", "agents[1].name: agent \"a\" defined twice",
				"agents[1].inboundPort", "agents[1].app", "agents[1].spiffeID"},
		},
		{
			name: "audit key secret must be served by the secrets source",
			yaml: "trustDomain: mesh.local\nsecrets:\n  local:\n    secrets: {api-key: k.txt}\naudit:\n  redaction: {keySecret: audit-key}\n",
			want: []string{`audit.redaction.keySecret: "audit-key" is not a secret of the local secrets source`},
		},
		{
			name: "wildcard authz address without xds.authzAddress",
			yaml: "trustDomain: mesh.local\nauthz:\n  address: 0.0.0.0:9191\n  plaintext: true\nagents:\n  - {name: a, spiffeID: spiffe://mesh.local/a, inboundPort: 1, app: 127.0.0.1:2}\n",
			want: []string{`xds.authzAddress: required because authz.address "0.0.0.0:9191" is a wildcard listen address`},
		},
		{
			name: "agent with meshward's own identity",
			yaml: "trustDomain: mesh.local\nagents:\n  - {name: a, spiffeID: spiffe://mesh.local/meshward/xds, inboundPort: 1, app: 127.0.0.1:2}\n",
			want: []string{`agents[0].spiffeID: "spiffe://mesh.local/meshward/xds" is under /meshward, reserved`},
		},
		{
			name: "envoy timeouts inconsistent",
			yaml: "trustDomain: mesh.local\nenvoy:\n  streamIdleTimeout: 60s\n  authzTimeout: -1s\n",
			want: []string{"envoy.authzTimeout: must not be negative"},
		},
		{
			name: "envoy stream idle shorter than the route timeout",
			yaml: "trustDomain: mesh.local\nenvoy:\n  streamIdleTimeout: 60s\n  routeTimeout: 90s\n",
			want: []string{"envoy.streamIdleTimeout: 1m0s is shorter than routeTimeout 1m30s"},
		},
		{name: "type mismatch", yaml: "trustDomain: [a]\n", want: []string{"cannot unmarshal"}},
		{name: "empty document", yaml: "", want: []string{"empty document"}},
		{name: "two documents", yaml: "trustDomain: a\n---\ntrustDomain: b\n", want: []string{"more than one YAML document"}},
		{name: "missing trust domain", yaml: "admin: {}\n", want: []string{"trustDomain: required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), fstest.MapFS{}, "test.yaml")
			if err == nil {
				t.Fatal("Parse() succeeded, want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal), fstest.MapFS{}, "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Authz.Policy.Rules[0].Effect != "allow" {
		t.Errorf("rule effect default = %q, want allow", c.Authz.Policy.Rules[0].Effect)
	}
	if c.Secrets.Source != "local" {
		t.Errorf("secrets source default = %q, want local", c.Secrets.Source)
	}
	if c.Authz.Server.Address == "" || c.XDS.Address == "" {
		t.Error("listen addresses not defaulted")
	}
	for _, a := range []string{c.Admin.Address, c.Authz.Server.Address, c.XDS.Address} {
		if !strings.HasPrefix(a, "127.0.0.1:") {
			t.Errorf("default address %q is not loopback", a)
		}
	}
}

func TestAuditKeySecretKnown(t *testing.T) {
	y := "trustDomain: mesh.local\nauthz:\n  plaintext: true\nsecrets:\n  local:\n    secrets: {audit-key: k.txt}\naudit:\n  redaction: {keySecret: audit-key}\n"
	if _, err := Parse([]byte(y), fstest.MapFS{"k.txt": {Data: []byte("0123456789abcdef")}}, "test.yaml"); err != nil {
		t.Fatalf("Parse() = %v, want a key secret the local source serves to be accepted", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want a not-exist error", err)
	}
}

// TestParseReportsEverythingInOnePass: unknown keys, type errors,
// validation failures and missing files come back together, each with its
// line, in line order.
func TestParseReportsEverythingInOnePass(t *testing.T) {
	y := `trustDomain: Mesh.Local
colour: blue
admin:
  address: nope
authz:
  plaintext: true
  statusOnError: lots
  rules:
    - name: a
      effect: maybe
      matchh: {path: /a}
  schemas:
    - name: s
      file: schemas/missing.json
`
	_, err := Parse([]byte(y), fstest.MapFS{}, "test.yaml")
	if err == nil {
		t.Fatal("Parse() succeeded")
	}
	want := []string{
		`trustDomain: "Mesh.Local" must be a lowercase DNS-like name (line 1)`,
		"colour: unknown field (line 2)",
		"admin.address: address nope: missing port in address (line 4)",
		"authz.statusOnError: cannot unmarshal !!str `lots` into int (line 7)",
		"authz.rules[0].effect: must be \"allow\" or \"deny\", not \"maybe\" (line 10)",
		"authz.rules[0].matchh: unknown field (line 11)",
		"authz.schemas[0].file: open schemas/missing.json: file does not exist (relative names are resolved from the folder of test.yaml) (line 14)",
	}
	msg := err.Error()
	last := -1
	for _, w := range want {
		i := strings.Index(msg, w)
		if i < 0 {
			t.Errorf("error does not contain %q:\n%s", w, msg)
			continue
		}
		if i < last {
			t.Errorf("%q is out of line order:\n%s", w, msg)
		}
		last = i
	}
}

func TestLoadFileErrorsNameFieldAndFolder(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "meshward.yaml")
	y := "trustDomain: mesh.local\nauthz:\n  plaintext: true\n  schemas:\n    - name: s\n      file: schemas/s.json\n    - name: t\n      file: ../t.json\n"
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil {
		t.Fatal("Load() succeeded with missing schema files")
	}
	for _, w := range []string{
		"authz.schemas[0].file: open schemas/s.json: no such file or directory (relative names are resolved from " + dir + ", the configuration file's folder) (line 6)",
		`authz.schemas[1].file: "../t.json" leaves the configuration's folder: use an absolute name`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q:\n%v", w, err)
		}
	}
	// From another working folder, the same relative name is found beside
	// the configuration file.
	if err := os.MkdirAll(filepath.Join(dir, "schemas"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(dir, "schemas", "s.json"), filepath.Join(filepath.Dir(dir), "t.json")} {
		if err := os.WriteFile(f, []byte(`{"type":"object"}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, []byte(strings.Replace(y, "../t.json", filepath.Join(filepath.Dir(dir), "t.json"), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	if _, err := Load(path); err != nil {
		t.Fatalf("Load() = %v, want the schema found beside the configuration", err)
	}
}

// TestLoadResolvesSecretsFilesFromConfigFolder: the secrets source reads
// its files itself; Load hands it names resolved from the configuration
// file's folder, not the working folder.
func TestLoadResolvesSecretsFilesFromConfigFolder(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "api.key"), []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "meshward.yaml")
	y := "trustDomain: mesh.local\nauthz:\n  plaintext: true\nsecrets:\n  local:\n    dataDir: ca\n    secrets: {api-key: api.key, abs: " + filepath.Join(dir, "api.key") + "}\n"
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Secrets.Local.Secrets["api-key"], filepath.Join(dir, "api.key"); got != want {
		t.Errorf("secrets.local.secrets.api-key = %q, want %q", got, want)
	}
	if got, want := c.Secrets.Local.DataDir, filepath.Join(dir, "ca"); got != want {
		t.Errorf("secrets.local.dataDir = %q, want %q", got, want)
	}
}

// TestAdminAddressOff: admin.address "off" (bare or quoted in YAML) turns
// the admin server off; anything else that is not host:port is an error,
// with a hint where it looks like an attempt to turn it off.
func TestAdminAddressOff(t *testing.T) {
	tests := []struct {
		name, address string
		off           bool
		wantErr       string
	}{
		{name: "bare off", address: "off", off: true},
		{name: "quoted off", address: `"off"`, off: true},
		{name: "default", address: `""`},
		{name: "loopback", address: "127.0.0.1:9999"},
		{name: "capitalised", address: "Off", wantErr: `admin.address: address Off: missing port in address (to turn the admin server off: "off")`},
		{name: "false", address: "false", wantErr: `(to turn the admin server off: "off")`},
		{name: "none", address: "none", wantErr: `(to turn the admin server off: "off")`},
		{name: "no port", address: "127.0.0.1", wantErr: "admin.address: address 127.0.0.1: missing port in address (line"},
		{name: "off with space", address: `"off "`, wantErr: "admin.address: address off : missing port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(minimal+"admin:\n  address: "+tt.address+"\n"), fstest.MapFS{}, "test.yaml")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse() = %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Admin.Off() != tt.off {
				t.Errorf("Off() = %v, want %v (address %q)", c.Admin.Off(), tt.off, c.Admin.Address)
			}
			if !tt.off && !strings.HasPrefix(c.Admin.Address, "127.0.0.1:") {
				t.Errorf("address %q, want loopback", c.Admin.Address)
			}
		})
	}
}
