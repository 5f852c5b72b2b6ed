package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/runtime"
	"github.com/meshward/meshward/cmd/meshward/internal/task"
	"github.com/meshward/meshward/extauthz"
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

// compilePolicy builds the policy revision cfg describes. A Rego bundle
// URL is fetched once (serve polls it instead: see buildAuthz).
func compilePolicy(cfg *config.Config) (*policy.Revision, error) {
	var b *policy.RegoBundle
	if r := cfg.Authz.Policy.Rego; r != nil && r.BundleURL != "" {
		var err error
		if b, err = policy.NewRegoBundle(r, cfg.Dir, policy.RegoBundleOptions{}); err != nil {
			return nil, fmt.Errorf("authz: %w", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), policy.RegoCompileTimeout)
		defer cancel()
		if _, err := b.Poll(ctx); err != nil {
			return nil, fmt.Errorf("authz: %w", err)
		}
	}
	return compileWithBundle(cfg, b)
}

// compileWithBundle builds the policy revision cfg describes, its Rego
// step serving b's current bundle (nil b: the Rego files cfg names).
func compileWithBundle(cfg *config.Config, b *policy.RegoBundle) (*policy.Revision, error) {
	opts := policyOptions(cfg)
	if b != nil {
		opts.NewRego = b.NewRego
	}
	rev, err := policy.Compile(&cfg.Authz.Policy, cfg.TrustDomain, opts)
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
	d.status.src.Policy = store
	// With a Rego bundle URL, one poller serves every revision; the
	// first revision is built by the first successful fetch: until then
	// the store has none, the component is not ready and Checks deny.
	var bundle *policy.RegoBundle
	var reload func(context.Context)
	if r := d.cfg.Authz.Policy.Rego; r != nil && r.BundleURL != "" {
		bundle, err = policy.NewRegoBundle(r, d.cfg.Dir, policy.RegoBundleOptions{Logger: d.log, Registry: d.reg, OnUpdate: func() {
			ctx, cancel := context.WithTimeout(context.Background(), policy.RegoCompileTimeout)
			defer cancel()
			reload(ctx)
		}})
		if err != nil {
			return nil, err
		}
	}
	compile := func(cfg *config.Config) (*policy.Revision, error) {
		if r := cfg.Authz.Policy.Rego; r != nil && r.BundleURL != "" {
			return nil, errors.New("authz: authz.rego.bundleURL added while serving: restart to apply")
		}
		return compilePolicy(cfg)
	}
	if bundle != nil {
		// Every revision serves the bundle poller's current engine.
		compile = func(cfg *config.Config) (*policy.Revision, error) { return compileWithBundle(cfg, bundle) }
	}
	if bundle == nil {
		if err := store.Reload(ctx, func() (*policy.Revision, error) { return compile(d.cfg) }); err != nil {
			return nil, err
		}
	}
	opts := extauthz.Options{Logger: d.log, Registry: d.reg, ReadFile: configFileReader(d.cfg)}
	if d.audit != nil {
		opts.Auditor = d.audit // every decision is recorded; failClosed denies when it cannot be
		// Only the headers the audit section digests are recorded.
		opts.AuditHeaders = d.cfg.Audit.Redaction.Headers
	}
	if d.cfg.Authz.Server.TLSFromSecrets() {
		mgr, err := d.secretsManager()
		if err != nil {
			return nil, err
		}
		id := authzServerID(d.cfg.TrustDomain)
		if err := mgr.Register(id); err != nil {
			return nil, err
		}
		opts.SVIDSource, opts.BundleSource = svidSource{mgr, id}, svidSource{mgr, id}
	}
	srv, err := extauthz.New(d.cfg.Authz.Server, d.cfg.TrustDomain, store, opts)
	if err != nil {
		return nil, err
	}
	if d.quarantine != nil {
		d.quarantine.subscribe(func(q *quarantineSnapshot) { srv.SetQuarantine(q.set) })
	}
	if err := srv.Listen(); err != nil {
		return nil, err
	}
	path := configPath(d.cfg)
	// apply takes a new configuration generation (or the error loading it).
	apply := func(ctx context.Context, cfg *config.Config, err error) {
		if err == nil && cfg.TrustDomain != d.cfg.TrustDomain {
			err = fmt.Errorf("trustDomain changed from %q to %q: restart to apply", d.cfg.TrustDomain, cfg.TrustDomain)
		}
		// Reload logs and counts failures itself; the old revision stays.
		rerr := store.Reload(ctx, func() (*policy.Revision, error) {
			if err != nil {
				return nil, err
			}
			return compile(cfg)
		})
		d.reloads.Report(runtime.ComponentAuthz, rerr, store.RevisionID(), true)
	}
	// A new bundle from the URL recompiles with the current generation.
	reload = func(ctx context.Context) {
		cfg, err := d.cfg, error(nil)
		if d.origin != nil {
			cfg, err = d.origin.Load()
		}
		apply(ctx, cfg, err)
	}
	tasks := []task.Task{{Name: "authz", Run: srv.Run}}
	// File changes and SIGHUP come from the configuration's one watcher,
	// shared with the xds component, which reloads after this one.
	if d.origin.Subscribe("authz", watchedFiles(d.cfg, path), apply) {
		tasks = append(tasks, configReloadTask(d))
	}
	if bundle != nil {
		tasks = append(tasks, task.Task{Name: "authz-bundle", Run: bundle.Run})
	}
	return &component{tasks: tasks, ready: srv}, nil
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
	if j := cfg.Authz.Policy.JSONRPC; j != nil && j.ToolsFile != "" {
		files = append(files, abs(j.ToolsFile))
	}
	return files
}
