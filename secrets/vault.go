package secrets

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"
)

// Vault is the Vault source: it logs in (token, AppRole or Kubernetes),
// keeps its token alive (Run), issues SVIDs from a PKI role, reads the
// trust bundle from the mount's issuers and generic secrets from KV v2.
type Vault struct {
	cfg    VaultConfig
	ttl    time.Duration
	client *vault.Client
	o      options

	loginMu sync.Mutex // serialises logins
	mu      sync.Mutex
	auth    *vault.Secret // current login; nil: log in before the next request
	relogin chan struct{}
	wrapped struct{ token, secretID string }

	kvMu sync.Mutex
	kv   map[string]*kvState
}

type kvState struct {
	cfg     VaultKV
	version int
	value   []byte
	has     bool
	deleted bool
}

// NewVault builds the Vault source; it contacts Vault only when used.
// ttl is the leaf lifetime asked of the PKI role (0: 1h).
func NewVault(cfg VaultConfig, ttl time.Duration, opts ...Option) (*Vault, error) {
	cfg.SetDefaults()
	if err := cfg.Validate("vault"); err != nil {
		return nil, fmtErr("vault", err)
	}
	if ttl <= 0 {
		ttl = DefaultCertTTL
	}
	vc := vault.DefaultConfig() // reads VAULT_* variables: everything that matters is set below
	if vc.Error != nil {
		return nil, fmtErr("vault: client config", vc.Error)
	}
	vc.Address = cfg.Address
	vc.MaxRetries = 0 // the callers retry with their own backoff
	vc.Timeout = cfg.RequestTimeout
	// Undo what VAULT_SKIP_VERIFY, VAULT_CACERT, VAULT_CLIENT_CERT or
	// VAULT_TLS_SERVER_NAME set: only this configuration decides.
	if tr, ok := vc.HttpClient.Transport.(*http.Transport); ok && tr.TLSClientConfig != nil {
		tc := tr.TLSClientConfig
		tc.InsecureSkipVerify, tc.RootCAs, tc.ServerName, tc.GetClientCertificate = false, nil, "", nil
		tc.MinVersion = tls.VersionTLS12
	} else {
		return nil, errors.New("vault: client config: unexpected HTTP transport")
	}
	if err := vc.ConfigureTLS(&vault.TLSConfig{CACert: cfg.TLSCA, TLSServerName: cfg.TLSServerName}); err != nil {
		return nil, fmtErr("vault: tlsCA", err)
	}
	c, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmtErr("vault: client", err)
	}
	c.ClearToken() // never pick up VAULT_TOKEN implicitly
	c.ClearNamespace()
	v := &Vault{cfg: cfg, ttl: ttl, client: c, o: buildOptions(opts), relogin: make(chan struct{}, 1), kv: map[string]*kvState{}}
	for _, kv := range cfg.KV {
		v.kv[kv.Name] = &kvState{cfg: kv}
	}
	return v, nil
}

func (v *Vault) method() string {
	switch {
	case v.cfg.Auth.Token != nil:
		return "token"
	case v.cfg.Auth.AppRole != nil:
		return "approle"
	default:
		return "kubernetes"
	}
}

// Login logs in now with the configured method, replacing any token held.
func (v *Vault) Login(ctx context.Context) error {
	v.loginMu.Lock()
	defer v.loginMu.Unlock()
	_, err := v.loginLocked(ctx)
	return err
}

func (v *Vault) loginLocked(ctx context.Context) (*vault.Secret, error) {
	start := time.Now()
	a, err := v.doLogin(ctx)
	v.o.metrics.vaultDuration.WithLabelValues("login").Observe(time.Since(start).Seconds())
	if err != nil {
		v.o.metrics.vaultLogin.WithLabelValues("failure").Inc()
		v.o.log.Warn("vault login failed", logMethod, v.method(), logErr, err)
		v.o.event(EventVaultLogin, "vault login failed", slog.String(logMethod, v.method()), slog.String(logErr, err.Error()))
		return nil, fmtErr("vault login ("+v.method()+")", err)
	}
	v.o.metrics.vaultLogin.WithLabelValues("success").Inc()
	v.client.SetToken(a.Auth.ClientToken)
	v.mu.Lock()
	v.auth = a
	v.mu.Unlock()
	select { // Run renews the newest login
	case v.relogin <- struct{}{}:
	default:
	}
	v.o.log.Info("vault login", logMethod, v.method(), "ttl", time.Duration(a.Auth.LeaseDuration)*time.Second, "renewable", a.Auth.Renewable)
	return a, nil
}

func (v *Vault) doLogin(ctx context.Context) (*vault.Secret, error) {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.RequestTimeout)
	defer cancel()
	anon, err := v.client.Clone() // no token: a login carries only its credentials
	if err != nil {
		return nil, err
	}
	anon.ClearToken()
	var a *vault.Secret
	switch {
	case v.cfg.Auth.Token != nil:
		a, err = v.tokenLogin(ctx, anon)
	case v.cfg.Auth.AppRole != nil:
		a, err = v.appRoleLogin(ctx, anon)
	default:
		a, err = v.kubernetesLogin(ctx, anon)
	}
	if err != nil {
		return nil, err
	}
	if a == nil || a.Auth == nil || a.Auth.ClientToken == "" {
		return nil, errors.New("vault returned no token")
	}
	return a, nil
}

func (v *Vault) tokenLogin(ctx context.Context, c *vault.Client) (*vault.Secret, error) {
	t := v.cfg.Auth.Token
	var tok string
	if t.Env != "" {
		tok = strings.TrimSpace(os.Getenv(t.Env))
		if tok == "" {
			return nil, fmt.Errorf("environment variable %s is empty", t.Env)
		}
	} else {
		var err error
		if tok, err = readSecretFile(t.File); err != nil {
			return nil, err
		}
	}
	c.SetToken(tok)
	self, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, fmtErr("look up token", err)
	}
	if self == nil {
		return nil, errors.New("look up token: empty answer")
	}
	ttl, _ := self.TokenTTL()
	renewable, _ := self.TokenIsRenewable()
	return &vault.Secret{Auth: &vault.SecretAuth{ClientToken: tok, Renewable: renewable, LeaseDuration: int(ttl.Seconds())}}, nil
}

func (v *Vault) appRoleLogin(ctx context.Context, c *vault.Client) (*vault.Secret, error) {
	ar := v.cfg.Auth.AppRole
	roleID := ar.RoleID
	if ar.RoleIDFile != "" {
		var err error
		if roleID, err = readSecretFile(ar.RoleIDFile); err != nil {
			return nil, err
		}
	}
	secretID, err := readSecretFile(ar.SecretIDFile)
	if err != nil {
		return nil, err
	}
	if ar.Wrapped {
		if secretID, err = v.unwrapSecretID(ctx, c, secretID); err != nil {
			return nil, err
		}
	}
	m, err := approle.NewAppRoleAuth(roleID, &approle.SecretID{FromString: secretID}, approle.WithMountPath(strings.Trim(ar.Mount, "/")))
	if err != nil {
		return nil, err
	}
	return c.Auth().Login(ctx, m)
}

// kubernetesLogin logs in with the service-account JWT, re-read from its
// file at every login (the kubelet rotates it).
func (v *Vault) kubernetesLogin(ctx context.Context, c *vault.Client) (*vault.Secret, error) {
	k := v.cfg.Auth.Kubernetes
	jwt, err := readSecretFile(k.JWTFile)
	if err != nil {
		return nil, err
	}
	m, err := kubernetes.NewKubernetesAuth(k.Role, kubernetes.WithServiceAccountToken(jwt), kubernetes.WithMountPath(strings.Trim(k.Mount, "/")))
	if err != nil {
		return nil, err
	}
	return c.Auth().Login(ctx, m)
}

// unwrapSecretID unwraps a response-wrapped secret_id. A wrapping token
// works once, so the secret_id it held is kept (in memory) for re-logins
// until the file holds a new wrapping token.
func (v *Vault) unwrapSecretID(ctx context.Context, c *vault.Client, wrapToken string) (string, error) {
	v.mu.Lock()
	if v.wrapped.token == wrapToken && v.wrapped.secretID != "" {
		id := v.wrapped.secretID
		v.mu.Unlock()
		return id, nil
	}
	v.mu.Unlock()
	wc, err := c.Clone()
	if err != nil {
		return "", err
	}
	wc.SetToken(wrapToken)
	s, err := wc.Logical().WriteWithContext(ctx, "sys/wrapping/unwrap", nil)
	if err != nil {
		return "", fmtErr("unwrap secret_id", err)
	}
	if s == nil {
		return "", errors.New("unwrap secret_id: empty answer")
	}
	id, _ := s.Data["secret_id"].(string)
	if id == "" {
		return "", errors.New("unwrap secret_id: the wrapped response holds no secret_id")
	}
	v.mu.Lock()
	v.wrapped.token, v.wrapped.secretID = wrapToken, id
	v.mu.Unlock()
	return id, nil
}

func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// ensureLogin returns the current login, logging in when there is none.
func (v *Vault) ensureLogin(ctx context.Context) (*vault.Secret, error) {
	v.mu.Lock()
	a := v.auth
	v.mu.Unlock()
	if a != nil {
		return a, nil
	}
	v.loginMu.Lock()
	defer v.loginMu.Unlock()
	v.mu.Lock()
	a = v.auth
	v.mu.Unlock()
	if a != nil {
		return a, nil
	}
	return v.loginLocked(ctx)
}

// invalidate drops login a (if still current) so that the next request
// logs in again, and tells Run to stop renewing it.
func (v *Vault) invalidate(a *vault.Secret) {
	v.mu.Lock()
	if v.auth == a {
		v.auth = nil
	}
	v.mu.Unlock()
	select {
	case v.relogin <- struct{}{}:
	default:
	}
}

// Run keeps a valid token: it logs in, renews the token with vault/api's
// LifetimeWatcher and logs in again when renewal ends or fails, or when a
// request was refused for a bad token; failed logins are retried with
// capped exponential backoff and jitter. It returns nil when ctx ends.
func (v *Vault) Run(ctx context.Context) error {
	bo := newBackoff(v.o.minBackoff, 30*time.Second)
	for {
		a, err := v.ensureLogin(ctx)
		if err != nil {
			d := bo.NextBackOff()
			v.o.log.Warn("vault login: retrying", logRetryIn, d)
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		start := time.Now()
		if !v.watch(ctx, a) {
			return nil
		}
		if time.Since(start) < time.Second {
			// A token that ends at once (TTL within the renewal grace):
			// do not spin on logins.
			if !sleep(ctx, bo.NextBackOff()) {
				return nil
			}
			continue
		}
		bo.Reset()
	}
}

// watch renews login a until its renewal ends; false when ctx ended.
func (v *Vault) watch(ctx context.Context, a *vault.Secret) bool {
	if a.Auth.LeaseDuration == 0 { // a token that never expires (e.g. root)
		select {
		case <-ctx.Done():
			return false
		case <-v.relogin:
			return true
		}
	}
	w, err := v.client.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: a, RenewBehavior: vault.RenewBehaviorIgnoreErrors})
	if err != nil {
		v.invalidate(a)
		return ctx.Err() == nil
	}
	go w.Start()
	finished := false
	defer func() {
		w.Stop()
		if !finished {
			// Wait for Start to return: no goroutine outlives watch.
			if err := <-w.DoneCh(); err != nil {
				v.o.log.Debug("vault token renewal ended while stopping", logErr, err)
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-v.relogin:
			v.mu.Lock()
			cur := v.auth
			v.mu.Unlock()
			if cur != a {
				return true
			}
		case r := <-w.RenewCh():
			v.o.metrics.vaultRenewal.WithLabelValues("success").Inc()
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				v.o.log.Debug("vault token renewed", "ttl", time.Duration(r.Secret.Auth.LeaseDuration)*time.Second)
			}
		case err := <-w.DoneCh():
			finished = true
			if err != nil {
				v.o.metrics.vaultRenewal.WithLabelValues("failure").Inc()
				v.o.log.Warn("vault token renewal failed: logging in again", logErr, err)
				v.o.event(EventVaultRenewal, "vault token renewal failed", slog.String(logErr, err.Error()))
			} else {
				v.o.metrics.vaultRenewal.WithLabelValues("ended").Inc()
				v.o.log.Info("vault token at the end of its life: logging in again")
			}
			v.invalidate(a)
			select { // drop the signal invalidate just sent to ourselves
			case <-v.relogin:
			default:
			}
			return true
		}
	}
}

// call runs one authenticated request, timed, with the request timeout;
// a 403 drops the token so that the next request logs in again.
func (v *Vault) call(ctx context.Context, op string, f func(ctx context.Context, c *vault.Client) (*vault.Secret, error)) (*vault.Secret, error) {
	return vaultCall(ctx, v, op, f)
}

// vaultCall is call for any result type (KV v2's typed answers).
func vaultCall[T any](ctx context.Context, v *Vault, op string, f func(ctx context.Context, c *vault.Client) (T, error)) (T, error) {
	var zero T
	a, err := v.ensureLogin(ctx)
	if err != nil {
		return zero, err
	}
	ctx, cancel := context.WithTimeout(ctx, v.cfg.RequestTimeout)
	defer cancel()
	start := time.Now()
	s, err := f(ctx, v.client)
	v.o.metrics.vaultDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if re := (*vault.ResponseError)(nil); errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
		v.invalidate(a)
	}
	return s, err
}

// IssueSVID issues a certificate for id from `<pki.mount>/issue/<pki.role>`
// and checks it before returning it.
func (v *Vault) IssueSVID(ctx context.Context, id string) (*SVID, error) {
	if err := ValidateID(id); err != nil {
		return nil, fmtErr("vault: issue", err)
	}
	data := map[string]any{
		"uri_sans":             id,
		"ttl":                  strconv.FormatInt(int64(v.ttl/time.Second), 10) + "s",
		"private_key_format":   "pkcs8",
		"exclude_cn_from_sans": true,
	}
	if v.cfg.PKI.CommonName != "" {
		data["common_name"] = v.cfg.PKI.CommonName
	}
	path := strings.Trim(v.cfg.PKI.Mount, "/") + "/issue/" + v.cfg.PKI.Role
	s, err := v.call(ctx, "issue", func(ctx context.Context, c *vault.Client) (*vault.Secret, error) {
		return c.Logical().WriteWithContext(ctx, path, data)
	})
	if err != nil {
		return nil, fmt.Errorf("vault: issue %s from %s: %w", id, path, err)
	}
	svid, err := parseIssued(s, id)
	if err == nil {
		err = svid.Check(id, v.o.now())
	}
	if err != nil {
		return nil, fmt.Errorf("vault: issue %s from %s: %w", id, path, err)
	}
	return svid, nil
}

// parseIssued turns the answer of `issue` into an SVID: the leaf, then
// the intermediates from ca_chain (or issuing_ca), without any root.
func parseIssued(s *vault.Secret, id string) (*SVID, error) {
	if s == nil || s.Data == nil {
		return nil, fmt.Errorf("%w: empty answer", ErrRejected)
	}
	certPEM, _ := s.Data["certificate"].(string)
	keyPEM, _ := s.Data["private_key"].(string)
	leaves, err := parseCertsPEM([]byte(certPEM))
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: want one PEM certificate (%w)", ErrRejected, err)
	}
	if len(leaves) != 1 {
		return nil, fmt.Errorf("%w: certificate: want one PEM certificate, found %d", ErrRejected, len(leaves))
	}
	key, err := parseKeyPEM([]byte(keyPEM))
	if err != nil {
		return nil, fmt.Errorf("%w: private_key: %w", ErrRejected, err)
	}
	var caPEMs []string
	if chain, ok := s.Data["ca_chain"].([]any); ok && len(chain) > 0 {
		for _, c := range chain {
			p, _ := c.(string)
			caPEMs = append(caPEMs, p)
		}
	} else if p, _ := s.Data["issuing_ca"].(string); p != "" {
		caPEMs = []string{p}
	}
	chain := []*x509.Certificate{leaves[0]}
	for _, p := range caPEMs {
		certs, err := parseCertsPEM([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("%w: ca_chain: %w", ErrRejected, err)
		}
		for _, c := range certs {
			if isSelfSigned(c) || slices.ContainsFunc(chain, c.Equal) {
				continue // the root is the bundle's, never the chain's
			}
			chain = append(chain, c)
		}
	}
	return &SVID{ID: id, Chain: chain, Key: key, NotAfter: leaves[0].NotAfter}, nil
}

// Bundle reads the roots of every issuer of the PKI mount (and of
// pki.rootMounts): during a CA rotation both roots are there. Expired
// roots are dropped.
func (v *Vault) Bundle(ctx context.Context) (*Bundle, error) {
	var all []*x509.Certificate
	mounts := append([]string{v.cfg.PKI.Mount}, v.cfg.PKI.RootMounts...)
	for _, m := range mounts {
		certs, err := v.issuerCerts(ctx, strings.Trim(m, "/"))
		if err != nil {
			return nil, fmt.Errorf("vault: bundle: %w", err)
		}
		all = append(all, certs...)
	}
	now := v.o.now()
	var roots []*x509.Certificate
	for _, c := range all {
		if isSelfSigned(c) && c.IsCA && now.Before(c.NotAfter) && !slices.ContainsFunc(roots, c.Equal) {
			roots = append(roots, c)
		}
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("vault: bundle: no valid root CA among the issuers of %v: the chain ends at an intermediate; add the root's mount to secrets.vault.pki.rootMounts", mounts)
	}
	slices.SortFunc(roots, func(a, b *x509.Certificate) int {
		if c := a.NotBefore.Compare(b.NotBefore); c != 0 {
			return c
		}
		return bytes.Compare(a.Raw, b.Raw)
	})
	return &Bundle{Roots: roots}, nil
}

func (v *Vault) issuerCerts(ctx context.Context, mount string) ([]*x509.Certificate, error) {
	list, err := v.call(ctx, "bundle", func(ctx context.Context, c *vault.Client) (*vault.Secret, error) {
		return c.Logical().ListWithContext(ctx, mount+"/issuers")
	})
	if err != nil {
		return nil, fmt.Errorf("list %s/issuers: %w", mount, err)
	}
	if list == nil || list.Data == nil {
		return nil, fmt.Errorf("list %s/issuers: no issuers", mount)
	}
	keys, _ := list.Data["keys"].([]any)
	var out []*x509.Certificate
	for _, k := range keys {
		ref, _ := k.(string)
		if ref == "" || strings.Contains(ref, "/") {
			continue
		}
		s, err := v.call(ctx, "bundle", func(ctx context.Context, c *vault.Client) (*vault.Secret, error) {
			return c.Logical().ReadWithContext(ctx, mount+"/issuer/"+ref+"/json")
		})
		if err != nil {
			return nil, fmt.Errorf("read %s/issuer/%s: %w", mount, ref, err)
		}
		if s == nil || s.Data == nil {
			continue
		}
		pems := []string{}
		if p, _ := s.Data["certificate"].(string); p != "" {
			pems = append(pems, p)
		}
		if chain, ok := s.Data["ca_chain"].([]any); ok {
			for _, c := range chain {
				p, _ := c.(string)
				pems = append(pems, p)
			}
		}
		for _, p := range pems {
			certs, err := parseCertsPEM([]byte(p))
			if err != nil {
				return nil, fmt.Errorf("read %s/issuer/%s: %w", mount, ref, err)
			}
			out = append(out, certs...)
		}
	}
	return out, nil
}

// SecretNames lists the configured KV secrets.
func (v *Vault) SecretNames() []string {
	names := make([]string, 0, len(v.cfg.KV))
	for _, kv := range v.cfg.KV {
		names = append(names, kv.Name)
	}
	slices.Sort(names)
	return names
}

// Secret returns the current value of a configured KV v2 secret. It reads
// the secret's metadata and fetches the data only when current_version
// changed. A deleted or destroyed secret keeps its last value (the
// meshward_secrets_kv_deleted gauge turns 1 until it comes back).
func (v *Vault) Secret(ctx context.Context, name string) ([]byte, error) {
	v.kvMu.Lock()
	defer v.kvMu.Unlock()
	st, ok := v.kv[name]
	if !ok {
		return nil, fmt.Errorf("vault: secret %q: %w (not in secrets.vault.kv)", name, ErrNotFound)
	}
	mount, path := strings.Trim(st.cfg.Mount, "/"), strings.Trim(st.cfg.Path, "/")
	meta, err := vaultCall(ctx, v, "kv", func(ctx context.Context, c *vault.Client) (*vault.KVMetadata, error) {
		return c.KVv2(mount).GetMetadata(ctx, path)
	})
	if err != nil && !errors.Is(err, vault.ErrSecretNotFound) {
		return nil, fmt.Errorf("vault: secret %q: read %s/metadata/%s: %w", name, mount, path, err)
	}
	version, deleted := kvCurrent(meta)
	if !deleted && version == st.version && st.has {
		v.setDeleted(st, false)
		return st.value, nil
	}
	var data *vault.KVSecret
	if !deleted {
		data, err = vaultCall(ctx, v, "kv", func(ctx context.Context, c *vault.Client) (*vault.KVSecret, error) {
			return c.KVv2(mount).GetVersion(ctx, path, version)
		})
		switch {
		case errors.Is(err, vault.ErrSecretNotFound):
			deleted = true
		case err != nil:
			return nil, fmt.Errorf("vault: secret %q: read %s/data/%s: %w", name, mount, path, err)
		case data == nil || data.Data == nil:
			deleted = true
		}
	}
	if deleted {
		v.setDeleted(st, true)
		if !st.has {
			return nil, fmt.Errorf("vault: secret %q: %w (deleted in Vault)", name, ErrNotFound)
		}
		return st.value, nil
	}
	raw, ok := data.Data[st.cfg.Key]
	if !ok {
		return nil, fmt.Errorf("vault: secret %q: %s/data/%s has no key %q", name, mount, path, st.cfg.Key)
	}
	var value []byte
	switch x := raw.(type) {
	case string:
		value = []byte(x)
	default:
		if value, err = json.Marshal(x); err != nil {
			return nil, fmt.Errorf("vault: secret %q: %w", name, err)
		}
	}
	v.setDeleted(st, false)
	st.version, st.value, st.has = version, value, true
	return value, nil
}

func (v *Vault) setDeleted(st *kvState, deleted bool) {
	if st.deleted == deleted {
		return
	}
	st.deleted = deleted
	if deleted {
		v.o.metrics.kvDeleted.WithLabelValues(st.cfg.Name).Set(1)
		v.o.log.Warn("vault kv secret deleted: serving its last value", logName, st.cfg.Name)
		v.o.event(EventSecretDeleted, "vault kv secret deleted: serving its last value", slog.String(logName, st.cfg.Name))
		return
	}
	v.o.metrics.kvDeleted.WithLabelValues(st.cfg.Name).Set(0)
}

// kvCurrent reads the current version from KV v2 metadata and whether
// that version is deleted or destroyed (or the whole secret is gone).
func kvCurrent(meta *vault.KVMetadata) (version int, deleted bool) {
	if meta == nil || meta.CurrentVersion == 0 {
		return 0, true
	}
	cur, ok := meta.Versions[strconv.Itoa(meta.CurrentVersion)]
	if !ok {
		return meta.CurrentVersion, false
	}
	return meta.CurrentVersion, !cur.DeletionTime.IsZero() || cur.Destroyed
}

// CheckRole logs in and checks that the PKI role exists, issues client and
// server certificates, does not require a common name unless one is
// configured, and allows a URI SAN for every id.
func (v *Vault) CheckRole(ctx context.Context, ids []string) error {
	path := strings.Trim(v.cfg.PKI.Mount, "/") + "/roles/" + v.cfg.PKI.Role
	s, err := v.call(ctx, "role", func(ctx context.Context, c *vault.Client) (*vault.Secret, error) {
		return c.Logical().ReadWithContext(ctx, path)
	})
	if err != nil {
		return fmt.Errorf("vault: read %s: %w", path, err)
	}
	if s == nil || s.Data == nil {
		return fmt.Errorf("vault: %s: role not found", path)
	}
	var errs []error
	if b, _ := s.Data["client_flag"].(bool); !b {
		errs = append(errs, fmt.Errorf("vault: %s: client_flag is false: certificates would lack the clientAuth EKU", path))
	}
	if b, _ := s.Data["server_flag"].(bool); !b {
		errs = append(errs, fmt.Errorf("vault: %s: server_flag is false: certificates would lack the serverAuth EKU", path))
	}
	if b, _ := s.Data["require_cn"].(bool); b && v.cfg.PKI.CommonName == "" {
		errs = append(errs, fmt.Errorf("vault: %s: require_cn is true but secrets.vault.pki.commonName is empty", path))
	}
	var patterns []string
	switch x := s.Data["allowed_uri_sans"].(type) {
	case []any:
		for _, p := range x {
			if p, ok := p.(string); ok {
				patterns = append(patterns, p)
			}
		}
	case string:
		patterns = strings.Split(x, ",")
	}
	for _, id := range ids {
		if !slices.ContainsFunc(patterns, func(p string) bool { return globMatch(strings.TrimSpace(p), id) }) {
			errs = append(errs, fmt.Errorf("vault: %s: allowed_uri_sans %v does not allow %s", path, patterns, id))
		}
	}
	return errors.Join(errs...)
}

// globMatch matches like Vault's allowed_uri_sans: '*' matches any run of
// characters, '/' included.
func globMatch(pattern, s string) bool {
	if pattern == "" {
		return false
	}
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}
