package secrets

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Config is the `secrets` configuration section.
type Config struct {
	// Source is "local" (default: an embedded CA) or "vault".
	Source string `yaml:"source"`
	// CertTTL is the lifetime of issued leaf certificates. Default 1h.
	CertTTL time.Duration `yaml:"certTTL"`
	// Local configures the embedded CA (source: local).
	Local LocalConfig `yaml:"local"`
	// Vault configures Vault (source: vault).
	Vault VaultConfig `yaml:"vault"`
}

// InMemoryCA reports whether certificates come from a local CA that lives
// in memory only: new at every start and in every process, so nothing
// another process issued from it is trusted.
func (c *Config) InMemoryCA() bool {
	return c.Source != SourceVault && c.Local.DataDir == ""
}

// LocalConfig is `secrets.local`: the embedded CA.
type LocalConfig struct {
	// DataDir, when set, is where the CA's root certificate and key are
	// loaded from or persisted to (folder 0700, files 0600). Empty: the CA
	// lives in memory and is new at every start.
	DataDir string `yaml:"dataDir"`
	// Secrets maps a generic secret's name to the file holding its value.
	Secrets map[string]string `yaml:"secrets"`
	// CAKeyEncryption encrypts the persisted CA key (ca.key) at rest.
	CAKeyEncryption CAKeyEncryption `yaml:"caKeyEncryption"`
}

// CAKeyEncryption is `secrets.local.caKeyEncryption`: ca.key is written
// AES-256-GCM encrypted with the key in KeyFile (the same kind of key, and
// the same mechanism, as audit.encryption: 32 bytes raw, hex or base64).
type CAKeyEncryption struct {
	// KeyFile holds the 32-byte key. Empty: ca.key is plaintext PKCS #8.
	KeyFile string `yaml:"keyFile"`
}

// VaultConfig is `secrets.vault`.
type VaultConfig struct {
	// Address of Vault, e.g. https://vault.example:8200. Required.
	Address string `yaml:"address"`
	// TLSCA is a PEM file of CAs that verify Vault's certificate
	// (default: the system roots).
	TLSCA string `yaml:"tlsCA"`
	// TLSServerName overrides the name checked in Vault's certificate.
	TLSServerName string `yaml:"tlsServerName"`
	// Auth is how meshward logs in: exactly one method.
	Auth VaultAuth `yaml:"auth"`
	// PKI is the secrets engine that issues the SVIDs.
	PKI VaultPKI `yaml:"pki"`
	// KV lists the generic secrets read from KV v2 engines.
	KV []VaultKV `yaml:"kv"`
	// PollInterval is how often the trust bundle and KV secrets are
	// polled. Default 30s.
	PollInterval time.Duration `yaml:"pollInterval"`
	// IssueRate caps certificate issuance, per second. Default 50.
	IssueRate float64 `yaml:"issueRate"`
	// RequestTimeout bounds each Vault request. Default 10s.
	RequestTimeout time.Duration `yaml:"requestTimeout"`
}

// VaultAuth holds one Vault auth method.
type VaultAuth struct {
	Token      *VaultTokenAuth      `yaml:"token"`
	AppRole    *VaultAppRoleAuth    `yaml:"appRole"`
	Kubernetes *VaultKubernetesAuth `yaml:"kubernetes"`
}

// VaultTokenAuth reads a token from an environment variable or a file.
type VaultTokenAuth struct {
	// Env names the environment variable (e.g. VAULT_TOKEN).
	Env string `yaml:"env"`
	// File holds the token (re-read at every login).
	File string `yaml:"file"`
}

// VaultAppRoleAuth logs in with AppRole.
type VaultAppRoleAuth struct {
	// Mount of the AppRole auth method. Default approle.
	Mount string `yaml:"mount"`
	// RoleID, or RoleIDFile holding it.
	RoleID     string `yaml:"roleID"`
	RoleIDFile string `yaml:"roleIDFile"`
	// SecretIDFile holds the secret_id (re-read at every login). Required.
	SecretIDFile string `yaml:"secretIDFile"`
	// Wrapped: the file holds a response-wrapping token that unwraps to
	// the secret_id.
	Wrapped bool `yaml:"wrapped"`
}

// VaultKubernetesAuth logs in with a Kubernetes service-account JWT.
type VaultKubernetesAuth struct {
	// Mount of the Kubernetes auth method. Default kubernetes.
	Mount string `yaml:"mount"`
	// Role to log in as. Required.
	Role string `yaml:"role"`
	// JWTFile holds the service-account token (re-read at every login).
	// Default /var/run/secrets/kubernetes.io/serviceaccount/token.
	JWTFile string `yaml:"jwtFile"`
}

// VaultPKI is the PKI secrets engine and role that issue SVIDs.
type VaultPKI struct {
	// Mount of the PKI engine. Default pki.
	Mount string `yaml:"mount"`
	// Role used for `<mount>/issue/<role>`. Required.
	Role string `yaml:"role"`
	// CommonName, optional, put in each issued certificate.
	CommonName string `yaml:"commonName"`
	// RootMounts are further PKI mounts whose issuers' roots join the
	// trust bundle, for a mount that holds only an intermediate imported
	// without its root.
	RootMounts []string `yaml:"rootMounts"`
}

// VaultKV names one generic secret: the value under Key of the KV v2
// secret at Mount/Path, served as Name.
type VaultKV struct {
	Name  string `yaml:"name"`
	Mount string `yaml:"mount"`
	Path  string `yaml:"path"`
	Key   string `yaml:"key"`
}

// Sources of key material.
const (
	SourceLocal = "local"
	SourceVault = "vault"
)

// Defaults.
const (
	DefaultCertTTL        = time.Hour
	DefaultPollInterval   = 30 * time.Second
	DefaultIssueRate      = 50
	DefaultRequestTimeout = 10 * time.Second
	DefaultJWTFile        = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// SetDefaults fills in defaults.
func (c *Config) SetDefaults() {
	if c.Source == "" {
		c.Source = SourceLocal
	}
	if c.CertTTL == 0 {
		c.CertTTL = DefaultCertTTL
	}
	if c.Source == SourceVault {
		c.Vault.SetDefaults()
	}
}

// SetDefaults fills in the Vault section's defaults.
func (v *VaultConfig) SetDefaults() {
	if v.PollInterval == 0 {
		v.PollInterval = DefaultPollInterval
	}
	if v.IssueRate == 0 {
		v.IssueRate = DefaultIssueRate
	}
	if v.RequestTimeout == 0 {
		v.RequestTimeout = DefaultRequestTimeout
	}
	if v.PKI.Mount == "" {
		v.PKI.Mount = "pki"
	}
	if a := v.Auth.AppRole; a != nil && a.Mount == "" {
		a.Mount = "approle"
	}
	if k := v.Auth.Kubernetes; k != nil {
		if k.Mount == "" {
			k.Mount = "kubernetes"
		}
		if k.JWTFile == "" {
			k.JWTFile = DefaultJWTFile
		}
	}
	for i := range v.KV {
		if v.KV[i].Mount == "" {
			v.KV[i].Mount = "secret"
		}
	}
}

// Validate reports every problem in c, named under path.
func (c *Config) Validate(path string) error {
	var errs []error
	switch c.Source {
	case SourceLocal, SourceVault:
	default:
		errs = append(errs, fmt.Errorf("%s.source: must be %q or %q, not %q", path, SourceLocal, SourceVault, c.Source))
	}
	if c.CertTTL < time.Minute {
		errs = append(errs, fmt.Errorf("%s.certTTL: %v is shorter than the 1m minimum", path, c.CertTTL))
	}
	for name, file := range c.Local.Secrets {
		if name == "" {
			errs = append(errs, fmt.Errorf("%s.local.secrets: empty secret name", path))
		}
		if file == "" {
			errs = append(errs, fmt.Errorf("%s.local.secrets.%s: file required", path, name))
		}
	}
	if c.Local.CAKeyEncryption.KeyFile != "" && c.Local.DataDir == "" {
		errs = append(errs, fmt.Errorf("%s.local.caKeyEncryption.keyFile: needs local.dataDir (an in-memory CA has no key file to encrypt)", path))
	}
	if c.Source == SourceVault {
		errs = append(errs, c.Vault.Validate(path+".vault"))
	}
	return errors.Join(errs...)
}

// Validate reports every problem in the Vault section, named under path.
func (v *VaultConfig) Validate(path string) error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", path, field, fmt.Sprintf(format, args...)))
	}
	if v.Address == "" {
		add("address", "required")
	} else if u, err := url.Parse(v.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("address", "%q is not an http(s) URL", v.Address)
	}
	n := 0
	if t := v.Auth.Token; t != nil {
		n++
		if (t.Env == "") == (t.File == "") {
			add("auth.token", "set exactly one of env and file")
		}
	}
	if a := v.Auth.AppRole; a != nil {
		n++
		if (a.RoleID == "") == (a.RoleIDFile == "") {
			add("auth.appRole.roleID", "set exactly one of roleID and roleIDFile")
		}
		if a.SecretIDFile == "" {
			add("auth.appRole.secretIDFile", "required")
		}
	}
	if k := v.Auth.Kubernetes; k != nil {
		n++
		if k.Role == "" {
			add("auth.kubernetes.role", "required")
		}
	}
	switch n {
	case 0:
		add("auth", "required: one of token, appRole, kubernetes")
	case 1:
	default:
		add("auth", "set only one of token, appRole, kubernetes")
	}
	if v.PKI.Role == "" {
		add("pki.role", "required")
	}
	if strings.Trim(v.PKI.Mount, "/") == "" {
		add("pki.mount", "required")
	}
	names := map[string]bool{}
	for i, kv := range v.KV {
		p := fmt.Sprintf("kv[%d]", i)
		if kv.Name == "" {
			add(p+".name", "required")
		} else if names[kv.Name] {
			add(p+".name", "%q is used twice", kv.Name)
		}
		names[kv.Name] = true
		if kv.Path == "" {
			add(p+".path", "required")
		}
		if kv.Key == "" {
			add(p+".key", "required")
		}
	}
	if v.PollInterval < time.Second {
		add("pollInterval", "%v is shorter than the 1s minimum", v.PollInterval)
	}
	if v.IssueRate <= 0 {
		add("issueRate", "must be positive")
	}
	if v.RequestTimeout <= 0 {
		add("requestTimeout", "must be positive")
	}
	return errors.Join(errs...)
}
