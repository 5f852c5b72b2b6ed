package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/policy"
	"github.com/meshward/meshward/secrets"
)

func runValidate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("validate", stderr)
	path := fs.String("config", "", "configuration file to check (required)")
	live := fs.Bool("live", false, "also log in to Vault and check that the PKI role allows every SPIFFE ID serve issues")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if *path == "" {
		return errors.New("validate: --config is required")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if err := compileAll(cfg); err != nil {
		return fmt.Errorf("%s: %w", *path, err)
	}
	if err := cfg.ValidateQuarantineFile(); err != nil {
		// serve --source file refuses it; with --source kubernetes the
		// MeshAgents hold the quarantine state.
		_, _ = fmt.Fprintf(stderr, "meshward: warning: %v\n", err)
	}
	for _, w := range insecureSettings(cfg) {
		_, _ = fmt.Fprintf(stderr, "meshward: warning: %s\n", w)
	}
	if *live {
		if err := checkLive(ctx, cfg); err != nil {
			return fmt.Errorf("%s: %w", *path, err)
		}
	}
	if err := outRefusal(cfg); err != nil {
		// serve runs this configuration; only `bootstrap --out` refuses it.
		_, _ = fmt.Fprintf(stderr, "meshward: note: %s: bootstrap %v\n", *path, err)
	}
	_, err = fmt.Fprintf(stdout, "%s: ok\n", *path)
	return err
}

// compileAll builds everything a configuration describes without serving
// it, so that `validate` catches what `serve` would refuse.
func compileAll(cfg *config.Config) error {
	if _, err := compilePolicy(cfg); err != nil {
		return err
	}
	// Schemas no rule names yet are compiled too, so that a broken one is
	// caught before a rule starts using it.
	if _, _, err := policy.CompileSchemas(&cfg.Authz.Policy, cfg.Dir, cfg.Authz.Policy.Body); err != nil {
		return fmt.Errorf("authz.schemas: %w", err)
	}
	return nil
}

// checkLive contacts the secrets source (`validate --live`): for Vault it
// logs in and checks that the PKI role allows every SPIFFE ID serve would
// have issued, that the trust bundle has a root and that the KV secrets
// are readable.
func checkLive(ctx context.Context, cfg *config.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return secrets.CheckLive(ctx, cfg.Secrets, servedIDs(cfg))
}

// servedIDs are the SPIFFE IDs `serve` has issued: every agent's, the xDS
// listener's, and the ext_authz listener's with authz.tls.fromSecrets.
func servedIDs(cfg *config.Config) []string {
	ids := make([]string, 0, len(cfg.Agents)+2)
	for _, a := range cfg.Agents {
		ids = append(ids, a.SPIFFEID)
	}
	ids = append(ids, xdsServerID(cfg.TrustDomain))
	if cfg.Authz.Server.TLSFromSecrets() {
		ids = append(ids, authzServerID(cfg.TrustDomain))
	}
	return ids
}
