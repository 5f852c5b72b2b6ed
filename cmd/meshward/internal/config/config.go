// Package config is meshward's configuration file: one YAML document,
// decoded strictly (every unknown key is an error naming its path), then
// defaulted, then validated (every problem reported at once, each with its
// field path). Each section's type belongs to the package that uses it.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meshward/meshward/cmd/meshward/internal/detect"
	"github.com/meshward/meshward/envoy"
	"github.com/meshward/meshward/examples/quickstart"
	"github.com/meshward/meshward/extauthz"
	"github.com/meshward/meshward/extauthz/audit"
	"github.com/meshward/meshward/policy"
	"github.com/meshward/meshward/secrets"
	"github.com/meshward/meshward/xds"
)

// Config is the whole configuration file.
type Config struct {
	// TrustDomain of every SPIFFE ID in the mesh, e.g. mesh.local.
	TrustDomain string         `yaml:"trustDomain"`
	Admin       Admin          `yaml:"admin"`
	Authz       Authz          `yaml:"authz"`
	XDS         xds.Config     `yaml:"xds"`
	Agents      []envoy.Agent  `yaml:"agents"`
	Envoy       envoy.Options  `yaml:"envoy"` // the agents' Envoys: timeouts, limits, ext_authz circuit breakers
	Secrets     secrets.Config `yaml:"secrets"`
	Audit       audit.Config   `yaml:"audit"`
	Quarantine  Quarantine     `yaml:"quarantine"`
	Detection   detect.Config  `yaml:"detection"`

	// Dir is where relative file names in the configuration are resolved:
	// the configuration file's folder, or the embedded quickstart.
	Dir fs.FS `yaml:"-"`
	// Source names where the configuration came from, for messages.
	Source string `yaml:"-"`
}

// Admin is the admin HTTP server: /healthz, /readyz, /metrics, /debug/xds
// and /ui.
type Admin struct {
	// Address, default 127.0.0.1:9090; AdminOff turns the server off.
	Address string `yaml:"address"`
}

// AdminOff as admin.address turns the admin server off: nothing listens
// for /healthz, /readyz, /metrics, /debug/xds or /ui.
const AdminOff = "off"

// Off reports whether the admin server is turned off.
func (a Admin) Off() bool { return a.Address == AdminOff }

// Authz is the `authz` section: the ext_authz server and its policy.
type Authz struct {
	Server extauthz.Config `yaml:",inline"`
	Policy policy.Config   `yaml:",inline"`
}

// Quarantine is the `quarantine` section: where the quarantine state
// file is (meshward quarantine / release write it, serve watches it).
type Quarantine struct {
	// File, default quarantine.json in secrets.local.dataDir when that is
	// set; relative names are resolved from the configuration's folder.
	File string `yaml:"file"`
	// API is the admin server's quarantine API; off unless a token is
	// configured.
	API QuarantineAPI `yaml:"api"`
}

// QuarantineAPI is `quarantine.api`: the bearer token that the admin
// server's /admin/quarantine and /admin/release require. With neither
// field set the API is off (its routes are not served).
type QuarantineAPI struct {
	// TokenFile holds the token (surrounding white space trimmed); read
	// at start and at each request, so it can be rotated in place.
	TokenFile string `yaml:"tokenFile"`
	// TokenSecret names a generic secret of the secrets source.
	TokenSecret string `yaml:"tokenSecret"`
}

// Enabled reports whether the quarantine API is configured.
func (a QuarantineAPI) Enabled() bool { return a.TokenFile != "" || a.TokenSecret != "" }

// QuarantineFileName is the state file's name in secrets.local.dataDir.
const QuarantineFileName = "quarantine.json"

// QuarantineFile is the quarantine state file, "" when neither
// quarantine.file nor secrets.local.dataDir is set (no quarantine).
func (c *Config) QuarantineFile() string {
	switch {
	case c.Quarantine.File != "":
		return c.Quarantine.File
	case c.Secrets.Local.DataDir != "":
		return filepath.Join(c.Secrets.Local.DataDir, QuarantineFileName)
	}
	return ""
}

// ValidateQuarantineFile reports what needs a quarantine state file when
// there is none: with serve --source kubernetes the MeshAgents'
// spec.quarantine hold the state and no file is needed, so Validate does
// not check it; serve checks it with a file source, and `validate`.
func (c *Config) ValidateQuarantineFile() error {
	if c.QuarantineFile() != "" {
		return nil
	}
	var errs []error
	if c.Detection.Enforces() {
		errs = append(errs, errors.New("detection.rules: a rule has quarantine: enforce but there is no quarantine state file: set quarantine.file or secrets.local.dataDir (or serve --source kubernetes)"))
	}
	if c.Quarantine.API.Enabled() {
		errs = append(errs, errors.New("quarantine.api: there is no quarantine state file for the API to edit: set quarantine.file or secrets.local.dataDir (or serve --source kubernetes)"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", c.Source, err)
	}
	return nil
}

// DefaultAdminAddress is where the admin server listens by default.
const DefaultAdminAddress = "127.0.0.1:9090"

// ErrInvalid wraps every decoding and validation failure.
var ErrInvalid = errors.New("invalid configuration")

// Parse decodes, defaults and validates a configuration. dir resolves the
// relative file names it holds; source names it in messages.
//
// Every problem is reported in one pass, in line order: unknown keys,
// values of the wrong type, validation failures and files that cannot be
// opened, each named by its field path and, where the file has the key,
// its line.
func Parse(data []byte, dir fs.FS, source string) (*Config, error) {
	return parse(data, dir, "the folder of "+source, "", source)
}

// parse is Parse; dirName says where relative names are looked for, and
// absDir, when set, is that folder on disk: file names read straight from
// disk (the secrets section's) are made absolute from it.
func parse(data []byte, dir fs.FS, dirName, absDir, source string) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s: empty document", ErrInvalid, source)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, source, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %s: more than one YAML document", ErrInvalid, source)
	}
	errs := unknownFields(&root, reflect.TypeFor[Config](), "")
	lines := fieldLines(&root)
	c := &Config{Dir: dir, Source: source}
	if err := root.Decode(c); err != nil {
		te, ok := typeErrors(err, lines)
		if !ok {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, source, err)
		}
		errs = append(errs, te...)
	}
	if absDir != "" {
		resolveSecretsFiles(&c.Secrets, absDir)
		if f := c.Quarantine.File; f != "" && !filepath.IsAbs(f) {
			c.Quarantine.File = filepath.Join(absDir, f)
		}
		if f := c.Quarantine.API.TokenFile; f != "" && !filepath.IsAbs(f) {
			c.Quarantine.API.TokenFile = filepath.Join(absDir, f)
		}
	}
	c.SetDefaults()
	errs = append(errs, withLines(c.Validate(), lines)...)
	errs = append(errs, c.checkFiles(dirName, lines)...)
	if len(errs) > 0 {
		sortByLine(errs)
		return nil, fmt.Errorf("%w: %s:\n%w", ErrInvalid, source, errors.Join(errs...))
	}
	return c, nil
}

// Load reads a configuration file; relative names in it are resolved from
// the file's folder.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	dir := filepath.Dir(abs)
	c, err := parse(data, os.DirFS(dir), dir+", the configuration file's folder", dir, path)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// resolveSecretsFiles makes the relative file names of the secrets section
// absolute from dir: the secrets source reads them from disk itself, and a
// relative name would otherwise depend on the working folder rather than
// the configuration file's, unlike every other name in the file.
func resolveSecretsFiles(s *secrets.Config, dir string) {
	abs := func(name *string) {
		if *name != "" && !filepath.IsAbs(*name) {
			*name = filepath.Join(dir, *name)
		}
	}
	abs(&s.Local.DataDir)
	abs(&s.Local.CAKeyEncryption.KeyFile)
	for n, f := range s.Local.Secrets {
		abs(&f)
		s.Local.Secrets[n] = f
	}
	abs(&s.Vault.TLSCA)
	if t := s.Vault.Auth.Token; t != nil {
		abs(&t.File)
	}
	if a := s.Vault.Auth.AppRole; a != nil {
		abs(&a.RoleIDFile)
		abs(&a.SecretIDFile)
	}
	if k := s.Vault.Auth.Kubernetes; k != nil {
		abs(&k.JWTFile)
	}
}

// Quickstart is the embedded default configuration (examples/quickstart).
func Quickstart() (*Config, error) {
	return Parse(quickstart.Config, quickstart.Files, "embedded quickstart")
}

// SetDefaults fills in every section's defaults.
func (c *Config) SetDefaults() {
	if c.Admin.Address == "" {
		c.Admin.Address = DefaultAdminAddress
	}
	c.Authz.Server.SetDefaults()
	c.Authz.Policy.SetDefaults()
	c.XDS.SetDefaults()
	c.Secrets.SetDefaults()
	c.Audit.SetDefaults()
	c.Detection.SetDefaults()
}

// Validate reports every problem at once, each named by its field path.
func (c *Config) Validate() error {
	var errs []error
	if c.TrustDomain == "" {
		errs = append(errs, errors.New("trustDomain: required"))
	} else if strings.ContainsAny(c.TrustDomain, "/:@ ") || c.TrustDomain != strings.ToLower(c.TrustDomain) {
		errs = append(errs, fmt.Errorf("trustDomain: %q must be a lowercase DNS-like name", c.TrustDomain))
	}
	if !c.Admin.Off() {
		if _, _, err := net.SplitHostPort(c.Admin.Address); err != nil {
			hint := ""
			if strings.EqualFold(c.Admin.Address, AdminOff) || slices.Contains([]string{"false", "no", "none", "disabled", "0"}, strings.ToLower(c.Admin.Address)) {
				hint = fmt.Sprintf(` (to turn the admin server off: %q)`, AdminOff)
			}
			errs = append(errs, fmt.Errorf("admin.address: %w%s", err, hint))
		}
	}
	errs = append(errs,
		c.Authz.Server.Validate("authz"),
		c.Authz.Policy.Validate("authz", c.TrustDomain),
		c.XDS.Validate("xds"),
		envoy.ValidateAgents("agents", c.Agents),
		c.Envoy.Validate("envoy"),
		c.Secrets.Validate("secrets"),
		c.Audit.Validate("audit"),
		c.Detection.Validate("detection"),
	)
	if api := c.Quarantine.API; api.Enabled() {
		if api.TokenFile != "" && api.TokenSecret != "" {
			errs = append(errs, errors.New("quarantine.api: set tokenFile or tokenSecret, not both"))
		}
		if name := api.TokenSecret; name != "" && !c.hasSecret(name) {
			errs = append(errs, fmt.Errorf("quarantine.api.tokenSecret: %q is not a secret of the %s secrets source (secrets.vault.kv or secrets.local.secrets)", name, c.Secrets.Source))
		}
		if c.Admin.Off() {
			errs = append(errs, errors.New("quarantine.api: the admin server that serves the API is off (admin.address: off)"))
		}
	}
	if name := c.Audit.Redaction.KeySecret; name != "" && !c.hasSecret(name) {
		errs = append(errs, fmt.Errorf("audit.redaction.keySecret: %q is not a secret of the %s secrets source (secrets.vault.kv or secrets.local.secrets)", name, c.Secrets.Source))
	}
	if len(c.Agents) > 0 && c.XDS.AuthzAddress == "" {
		if host, _, err := net.SplitHostPort(c.Authz.Server.Address); err == nil && envoy.IsWildcardHost(host) {
			errs = append(errs, fmt.Errorf("xds.authzAddress: required because authz.address %q is a wildcard listen address: the agents' Envoys dial xds.authzAddress (default authz.address) for ext_authz, and each would reach its own host", c.Authz.Server.Address))
		}
	}
	for i, a := range c.Agents {
		if want := "spiffe://" + c.TrustDomain + "/"; !strings.HasPrefix(a.SPIFFEID, want) {
			errs = append(errs, fmt.Errorf("agents[%d].spiffeID: %q is not in trust domain %q", i, a.SPIFFEID, c.TrustDomain))
		}
	}
	return errors.Join(errs...)
}

// hasSecret reports whether the secrets source serves a generic secret name.
func (c *Config) hasSecret(name string) bool {
	if c.Secrets.Source == secrets.SourceVault {
		for _, kv := range c.Secrets.Vault.KV {
			if kv.Name == name {
				return true
			}
		}
		return false
	}
	_, ok := c.Secrets.Local.Secrets[name]
	return ok
}
