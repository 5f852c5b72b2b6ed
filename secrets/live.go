package secrets

import (
	"context"
	"errors"
	"fmt"
)

// CheckLive checks what configuration validation cannot without
// contacting the source (`meshward validate --live`). For Vault: the login
// works, the PKI role exists and allows a URI SAN for every id, the trust
// bundle has a root, and every configured KV secret is readable. The
// local source has nothing to contact: nil.
func CheckLive(ctx context.Context, cfg Config, ids []string, opts ...Option) error {
	cfg.SetDefaults()
	if err := cfg.Validate("secrets"); err != nil {
		return err
	}
	if cfg.Source != SourceVault {
		return nil
	}
	if a := cfg.Vault.Auth.AppRole; a != nil && a.Wrapped {
		// A wrapping token unwraps once: a login here would leave none for serve.
		return errors.New("secrets.vault.auth.appRole.wrapped: a live check would consume the one-time wrapping token; check with an unwrapped secret_id or a token instead")
	}
	var errs []error
	for _, id := range ids {
		if err := ValidateID(id); err != nil {
			errs = append(errs, err)
		}
	}
	v, err := NewVault(cfg.Vault, cfg.CertTTL, opts...)
	if err != nil {
		return err
	}
	if err := v.Login(ctx); err != nil {
		return errors.Join(append(errs, err)...)
	}
	errs = append(errs, v.CheckRole(ctx, ids))
	if _, err := v.Bundle(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, name := range v.SecretNames() {
		if _, err := v.Secret(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("secrets: live check against %s: %w", cfg.Vault.Address, err)
	}
	return nil
}
