package main

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/task"
	"github.com/meshward/meshward/extauthz"
	"github.com/meshward/meshward/extauthz/audit"
	"github.com/meshward/meshward/policy"
)

// policyOptions are the policy steps wired into every revision: the JSON
// Schema step (with the limits of authz.body) and the Rego step.
func policyOptions(cfg *config.Config) policy.Options {
	return policy.Options{
		Dir:            cfg.Dir,
		NewBodyChecker: policy.NewSchemaBodyChecker(cfg.Authz.Policy.Body),
		NewRego:        policy.NewOPARego,
	}
}

// compilePolicy builds the policy revision cfg describes.
func compilePolicy(cfg *config.Config) (*policy.Revision, error) {
	rev, err := policy.Compile(&cfg.Authz.Policy, cfg.TrustDomain, policyOptions(cfg))
	if err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	return rev, nil
}

// configPath is the file cfg was loaded from, "" for the embedded quickstart.
func configPath(cfg *config.Config) string {
	if _, embedded := cfg.Dir.(embed.FS); embedded {
		return ""
	}
	return cfg.Source
}

// configFileReader reads files named in cfg: absolute names from disk,
// relative ones from cfg.Dir.
func configFileReader(cfg *config.Config) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		if filepath.IsAbs(name) {
			return os.ReadFile(name)
		}
		return fs.ReadFile(cfg.Dir, filepath.ToSlash(name))
	}
}

// buildAuthz is the "authz" component: the ext_authz server deciding with
// a policy store that reloads on file change and SIGHUP.
func buildAuthz(ctx context.Context, d *serveDeps) (*component, error) {
	store, err := policy.NewStore(policy.StoreOptions{Logger: d.log, Registry: d.reg})
	if err != nil {
		return nil, err
	}
	if err := store.Reload(ctx, func() (*policy.Revision, error) { return compilePolicy(d.cfg) }); err != nil {
		return nil, err
	}
	opts := extauthz.Options{Logger: d.log, Registry: d.reg, ReadFile: configFileReader(d.cfg)}
	if d.audit != nil {
		opts.Auditor = d.audit // every decision is recorded; failClosed denies when it cannot be
		// Only the headers the audit section digests are recorded.
		opts.AuditHeaders = d.cfg.Audit.Redaction.Headers
	}
	srv, err := extauthz.New(d.cfg.Authz.Server, d.cfg.TrustDomain, store, opts)
	if err != nil {
		return nil, err
	}
	if err := srv.Listen(); err != nil {
		return nil, err
	}
	path := configPath(d.cfg)
	reload := func(ctx context.Context) {
		cfg, err := d.cfg, error(nil)
		if path != "" {
			cfg, err = config.Load(path)
		}
		if err == nil && cfg.TrustDomain != d.cfg.TrustDomain {
			err = fmt.Errorf("trustDomain changed from %q to %q: restart to apply", d.cfg.TrustDomain, cfg.TrustDomain)
		}
		// Reload logs and counts failures itself; the old revision stays.
		rerr := store.Reload(ctx, func() (*policy.Revision, error) {
			if err != nil {
				return nil, err
			}
			return compilePolicy(cfg)
		})
		if rerr != nil && d.audit != nil {
			// The event is best effort: a full queue is counted by the logger.
			_ = d.audit.Event(audit.KindPolicyReload, "policy reload failed; keeping the current revision",
				map[string]string{"error": rerr.Error(), "serving": store.RevisionID()})
		}
	}
	watch := func(ctx context.Context) error {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP)
		defer signal.Stop(sig)
		return policy.Watch(ctx, policy.WatchOptions{Files: watchedFiles(d.cfg, path), Signals: sig, Logger: d.log}, reload)
	}
	return &component{
		tasks: []task.Task{{Name: "authz", Run: srv.Run}, {Name: "authz-reload", Run: watch}},
		ready: srv,
	}, nil
}

// watchedFiles are the configuration file and the schema and Rego files it
// names (folders of Rego files are not watched: use SIGHUP).
func watchedFiles(cfg *config.Config, path string) []string {
	if path == "" {
		return nil
	}
	dir := filepath.Dir(path)
	files := []string{path}
	abs := func(f string) string {
		if filepath.IsAbs(f) {
			return f
		}
		return filepath.Join(dir, f)
	}
	for _, s := range cfg.Authz.Policy.Schemas {
		if s.File != "" {
			files = append(files, abs(s.File))
		}
	}
	if r := cfg.Authz.Policy.Rego; r != nil {
		for _, f := range r.Files {
			if st, err := os.Stat(abs(f)); err == nil && !st.IsDir() {
				files = append(files, abs(f))
			}
		}
		if r.Bundle != "" {
			files = append(files, abs(r.Bundle))
		}
	}
	return files
}
