package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshward/meshward/cmd/meshward/internal/admin"
	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/detect"
	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/cmd/meshward/internal/runtime"
	"github.com/meshward/meshward/cmd/meshward/internal/task"
	"github.com/meshward/meshward/cmd/meshward/internal/ui"
	"github.com/meshward/meshward/extauthz"
	"github.com/meshward/meshward/extauthz/audit"
	"github.com/meshward/meshward/secrets"
	"github.com/meshward/meshward/xds"
)

// component is one service meshward can serve.
type component struct {
	tasks []task.Task
	ready admin.Checker
}

// componentNames lists the components in start order.
var componentNames = []string{"authz", "xds"}

// serveDeps is what every component is built from.
type serveDeps struct {
	cfg    *config.Config
	log    *slog.Logger
	reg    *prometheus.Registry
	stdout io.Writer
	admin  *admin.Server
	// audit receives every decision and security event. It outlives the
	// components so that decisions made while they drain are recorded.
	audit *audit.Logger
	// secrets is the secrets manager the components share (one CA, one
	// Vault login), made by the first component that needs it; serve runs
	// it.
	secretsMu sync.Mutex
	secrets   *secrets.Manager
	// status collects what the admin server's /ui page reads.
	status *statusPage
	// reloads reports every component's configuration reloads alike.
	reloads *runtime.Reporter
	// origin makes the configuration's next generations; every
	// component's runner subscribes to it.
	origin *runtime.Origin
	// quarantine serves the quarantine state: the state file's, or in
	// Kubernetes mode the MeshAgents'; nil without either.
	quarantine *quarantineWatch
	// quarantineKube edits the MeshAgents' spec.quarantine in Kubernetes
	// mode (the admin API, detection); nil in file mode.
	quarantineKube *kube.Editor
}

// quarantineSource is a configuration source that holds the quarantine
// state itself (Kubernetes mode: the MeshAgents' spec.quarantine), so
// that every replica watching it applies the same.
type quarantineSource interface {
	Quarantine() *quarantine.State
	WatchQuarantine(ctx context.Context, apply func(*quarantine.State)) error
	Editor() *kube.Editor
}

// warnAdminOff is logged when admin.address is off.
const warnAdminOff = "admin server off (admin.address: off): no /healthz, /readyz, /metrics, /debug/xds or /ui; " +
	"no readiness probe but ext_authz's gRPC health service (with the authz component)"

// warnAuthzOwnCA is logged when ext_authz takes its certificate from an
// in-memory local CA that no xDS component in the process shares.
const warnAuthzOwnCA = "authz.tls.fromSecrets with an in-memory local CA and no xds component in this process: " +
	"the Envoys' certificates come from another CA, which does not trust this one; " +
	"persist the CA (secrets.local.dataDir) or use Vault"

// secretsManager returns the components' shared secrets manager, making
// it on first use (the audit logger's key sources ask for it from the
// audit goroutine, the components from serve's).
func (d *serveDeps) secretsManager() (*secrets.Manager, error) {
	d.secretsMu.Lock()
	defer d.secretsMu.Unlock()
	if d.secrets != nil {
		return d.secrets, nil
	}
	sm, err := secrets.NewMetrics(d.reg)
	if err != nil {
		return nil, err
	}
	opts := []secrets.Option{secrets.WithLogger(d.log), secrets.WithMetrics(sm)}
	if d.audit != nil {
		opts = append(opts, secrets.WithEventSink(secretsEvents{d.audit}))
	}
	mgr, err := secrets.New(d.cfg.Secrets, opts...)
	if err != nil {
		return nil, err
	}
	d.secrets = mgr
	return mgr, nil
}

type serveFlags struct {
	configPath string
	components string
	logLevel   string
	logFormat  string
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f serveFlags
	fs := newFlagSet("serve", stderr)
	fs.StringVar(&f.configPath, "config", "", "configuration file (default: the embedded quickstart)")
	fs.StringVar(&f.components, "components", strings.Join(componentNames, ","), "components to run: any of "+strings.Join(componentNames, ","))
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.logFormat, "log-format", "json", "log format: json or text")
	source := addSourceFlags(fs)
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	enabled, err := parseComponents(f.components)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(f.configPath)
	if err != nil {
		return err
	}
	cfg, origin, err := source.apply(ctx, cfg, f.configPath, log)
	if err != nil {
		return err
	}
	if f.configPath == "" {
		log.Warn("no --config given: serving the embedded quickstart (local CA, plaintext demo listeners)")
	}
	return serve(ctx, cfg, origin, enabled, log, stdout)
}

// insecureSettings are warnings for settings of cfg that leave a listener
// open to whoever reaches it, for validate to print; serve's servers log
// each of them when they start listening.
func insecureSettings(cfg *config.Config) []string {
	var w []string
	if admin.Wildcard(cfg.Admin.Address) {
		w = append(w, admin.WarnWildcard)
	}
	if cfg.Authz.Server.Plaintext {
		w = append(w, extauthz.WarnPlaintext)
	}
	if cfg.XDS.Insecure {
		w = append(w, xds.WarnInsecure)
	}
	return w
}

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Quickstart()
	}
	return config.Load(path)
}

// serve runs the enabled components and the admin server until ctx ends
// or one of them fails; origin makes cfg's next generations.
func serve(ctx context.Context, cfg *config.Config, origin *runtime.Origin, enabled []string, log *slog.Logger, stdout io.Writer) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	checks := map[string]admin.Checker{}
	// The admin server warns of a wildcard address itself when it
	// listens, ext_authz of plaintext and xDS of insecure mode.
	adm := admin.New(cfg.Admin.Address, reg, checks, log)
	aopts := []audit.Option{audit.WithLogger(log), audit.WithRegisterer(reg),
		audit.WithStdout(stdout), audit.WithReadFile(configFileReader(cfg))}
	// The audit keys come from the components' one secrets manager, asked
	// when the audit logger starts (deps exists by then).
	var deps *serveDeps
	needSecrets := cfg.Quarantine.API.TokenSecret != "" // the quarantine API's token
	for _, k := range []struct {
		name string
		opt  func(audit.KeySource) audit.Option
	}{
		{cfg.Audit.Redaction.KeySecret, audit.WithKeySource},
		{cfg.Audit.Seal.KeySecret, audit.WithSealKeySource},
		{cfg.Audit.Encryption.KeySecret, audit.WithEncryptionKeySource},
	} {
		if k.name != "" {
			aopts = append(aopts, k.opt(func(ctx context.Context) ([]byte, error) { return deps.auditKey(ctx, k.name) }))
			needSecrets = true
		}
	}
	page := newStatusPage()
	// The tap sees records after redaction; det is set before the audit
	// logger runs. With the admin server off no page reads the ring.
	var det *detect.Detector
	var ring *ui.DenyRing
	if !cfg.Admin.Off() {
		ring = page.src.Denies
	}
	aopts = append(aopts, audit.WithTap(func(r *audit.Record) {
		if ring != nil {
			ring.Tap(r)
		}
		if det != nil {
			det.Tap(r)
		}
	}))
	auditLog, err := audit.New(cfg.Audit, aopts...)
	if err != nil {
		return fmt.Errorf("start audit logger: %w", err) // audit's errors say "audit: " themselves
	}
	qsrc, _ := origin.Source().(quarantineSource)
	var qkube *kube.Editor
	if qsrc != nil {
		qkube = qsrc.Editor()
	}
	if det, err = newDetector(cfg, qkube, log, reg, auditLog); err != nil {
		return err
	}
	checks["audit"] = auditLog
	deps = &serveDeps{cfg: cfg, origin: origin, log: log, reg: reg, stdout: stdout, admin: adm, audit: auditLog, status: page, quarantineKube: qkube}
	if deps.reloads, err = runtime.NewReporter(log, reg, auditLog); err != nil {
		return err
	}
	if needSecrets {
		// Made before the audit logger starts and asks it for its keys
		// (and the quarantine API for its token), so that the
		// components find it and serve runs it.
		if _, err := deps.secretsManager(); err != nil {
			return err
		}
	}

	// The audit logger runs beside the group, not in it: it is stopped only
	// after every component has drained, so no decision goes unrecorded.
	auditCtx, stopAudit := context.WithCancel(context.WithoutCancel(ctx))
	auditDone := make(chan struct{})
	var auditErr error
	go func() {
		defer close(auditDone)
		auditErr = auditLog.Run(auditCtx)
	}()
	defer func() {
		stopAudit()
		<-auditDone
	}()

	var tasks []task.Task
	switch path := cfg.QuarantineFile(); {
	case qsrc != nil:
		// The state the source listed at start, before any component.
		deps.quarantine = newSourceQuarantineWatch(qsrc.Quarantine(), log, auditLog)
		if path != "" {
			log.Warn("quarantine: with --source kubernetes the MeshAgents' spec.quarantine hold the quarantine; the state file is not read", logFile, path)
		}
		tasks = append(tasks, task.Task{Name: "quarantine", Run: func(ctx context.Context) error {
			return qsrc.WatchQuarantine(ctx, deps.quarantine.set)
		}})
	case path != "":
		// Loaded before any component, so that none serves a moment
		// without the quarantine; an unreadable file stops serve.
		if deps.quarantine, err = newQuarantineWatch(path, log, auditLog); err != nil {
			return err
		}
		tasks = append(tasks, task.Task{Name: "quarantine", Run: deps.quarantine.Run})
	}
	if det != nil {
		tasks = append(tasks, task.Task{Name: "detection", Run: det.Run})
	}
	for _, name := range enabled {
		c, err := builders[name](ctx, deps)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		checks[name] = c.ready
		tasks = append(tasks, c.tasks...)
	}
	if mgr := deps.sharedSecrets(); mgr != nil {
		checks["secrets"] = admin.CheckerFunc(mgr.Ready)
		tasks = append(tasks, task.Task{Name: "secrets", Run: mgr.Run})
	}
	if cfg.Authz.Server.TLSFromSecrets() && !slices.Contains(enabled, "xds") && cfg.Secrets.InMemoryCA() {
		log.Warn(warnAuthzOwnCA)
	}
	if cfg.Admin.Off() {
		// The routes the components added stay unserved; the status page
		// and its sampler are not even built.
		log.Warn(warnAdminOff)
	} else {
		tasks = append(tasks, page.register(adm, deps, reg)...)
		apiTasks, err := registerQuarantineAPI(ctx, adm, deps)
		if err != nil {
			return err
		}
		tasks = append(tasks, apiTasks...)
		if err := adm.Listen(); err != nil {
			return fmt.Errorf("admin: %w", err)
		}
		tasks = append(tasks, task.Task{Name: "admin", Run: adm.Run})
	}
	tasks = append(tasks, task.Task{Name: "audit", Run: func(ctx context.Context) error {
		select {
		case <-auditDone:
			if auditErr != nil {
				return auditErr
			}
			return errors.New("audit logger stopped")
		case <-ctx.Done():
			return nil
		}
	}})
	log.Info("meshward serving", "version", versionString(), "components", enabled, "config", cfg.Source)
	err = task.Run(ctx, tasks...)
	log.Info("meshward stopped")
	return err
}

func parseComponents(s string) ([]string, error) {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if _, ok := builders[p]; !ok || !slices.Contains(componentNames, p) {
			return nil, fmt.Errorf("--components: unknown component %q (have %s)", p, strings.Join(componentNames, ", "))
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--components: enable at least one component")
	}
	// Start in the documented order whatever order the flag gave.
	slices.SortFunc(out, func(a, b string) int { return slices.Index(componentNames, a) - slices.Index(componentNames, b) })
	return out, nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format: %q is not json or text", format)
	}
}

// sharedSecrets is the secrets manager if one was made, else nil.
func (d *serveDeps) sharedSecrets() *secrets.Manager {
	d.secretsMu.Lock()
	defer d.secretsMu.Unlock()
	return d.secrets
}

// auditKey reads an audit key (redaction, seal or encryption) from the
// shared secrets manager: the secrets source's generic secret name.
func (d *serveDeps) auditKey(ctx context.Context, name string) ([]byte, error) {
	mgr, err := d.secretsManager()
	if err != nil {
		return nil, fmt.Errorf("audit keySecret %q: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	key, err := mgr.Secret(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("audit keySecret %q: %w", name, err)
	}
	return key, nil
}

// secretKeySource reads an audit key from a secrets source of its own,
// for the audit commands, which run without serve's secrets manager.
func secretKeySource(cfg *config.Config, name string, log *slog.Logger) audit.KeySource {
	return func(ctx context.Context) ([]byte, error) {
		src, err := secrets.New(cfg.Secrets, secrets.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("audit keySecret %q: %w", name, err)
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		key, err := src.Secret(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("audit keySecret %q: %w", name, err)
		}
		return key, nil
	}
}
