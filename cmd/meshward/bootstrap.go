package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/envoy"
	"github.com/meshward/meshward/secrets"
)

// bootstrapFile is the bootstrap's name in --out.
const bootstrapFile = "envoy.yaml"

type bootstrapFlags struct {
	node, configPath, out, certDir, xdsAddress, xdsSPIFFEID, cluster, adminSocket string
	podName, podNamespace                                                         string
	adminPort                                                                     uint
	watch                                                                         bool
}

func runBootstrap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f bootstrapFlags
	fs := newFlagSet("bootstrap", stderr)
	fs.StringVar(&f.node, "node", "", "agent whose Envoy bootstrap to print (required)")
	fs.StringVar(&f.podName, "pod-name", "", "with --pod-namespace, in Kubernetes mode: the node id is <node>.<pod-name>.<pod-namespace>, one per pod (the downward API's metadata.name)")
	fs.StringVar(&f.podNamespace, "pod-namespace", "", "the pod's namespace, its MeshAgent's (the downward API's metadata.namespace); with --pod-name")
	fs.StringVar(&f.configPath, "config", "", "configuration file (default: the embedded quickstart)")
	fs.StringVar(&f.out, "out", "", "folder to also write "+bootstrapFile+" and, with mTLS xDS, the node's xDS client certificate, key, CA bundle and SDS files into")
	fs.StringVar(&f.certDir, "cert-dir", envoy.DefaultCertDir, "absolute folder on the Envoy host holding the xDS client files (default with --out: that folder)")
	fs.StringVar(&f.xdsAddress, "xds-address", "", "host:port Envoy dials for xDS (default: xds.address of the configuration)")
	fs.StringVar(&f.xdsSPIFFEID, "xds-spiffe-id", "", "SPIFFE ID the xDS server's certificate must carry (default: the one meshward serve gives it, spiffe://<trustDomain>/meshward/xds)")
	fs.StringVar(&f.cluster, "cluster", envoy.DefaultNodeCluster, "the node's cluster")
	fs.UintVar(&f.adminPort, "admin-port", 0, fmt.Sprintf("port of Envoy's admin server, on 127.0.0.1 only (default: the agent's adminPort, else %d when no other agent shares its host)", envoy.DefaultAdminPort))
	fs.StringVar(&f.adminSocket, "admin-socket", "", "absolute path of a unix socket (mode 0600) for Envoy's admin server, instead of --admin-port")
	fs.BoolVar(&f.watch, "watch", false, "with --out and mTLS xDS: keep running and renew the xDS client certificate at half its lifetime, renaming the new files into --out (which Envoy watches)")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if f.watch && f.out == "" {
		return errors.New("bootstrap: --watch needs --out: it renews the files written there")
	}
	if f.node == "" {
		return errors.New("bootstrap: --node is required")
	}
	if (f.podName == "") != (f.podNamespace == "") {
		return errors.New("bootstrap: --pod-name and --pod-namespace go together")
	}
	portSet := false
	fs.Visit(func(fl *flag.Flag) { portSet = portSet || fl.Name == "admin-port" })
	if portSet && (f.adminPort == 0 || f.adminPort > 65535) {
		return errors.New("bootstrap: --admin-port must be 1-65535")
	}
	if portSet && f.adminSocket != "" {
		return errors.New("bootstrap: --admin-port and --admin-socket are exclusive")
	}
	cfg, err := loadConfig(f.configPath)
	if err != nil {
		return err
	}
	var agent *envoy.Agent
	for i := range cfg.Agents {
		if cfg.Agents[i].Name == f.node {
			agent = &cfg.Agents[i]
		}
	}
	if agent == nil {
		names := make([]string, len(cfg.Agents))
		for i, a := range cfg.Agents {
			names[i] = a.Name
		}
		known := "it has no agents"
		if len(names) > 0 {
			known = "its agents are " + strings.Join(names, ", ")
		}
		return fmt.Errorf("bootstrap: %w %q in %s: %s", envoy.ErrUnknownAgent, f.node, cfg.Source, known)
	}
	if err := checkAdminPort(cfg.Agents, agent, f.adminSocket, uint32(f.adminPort)); err != nil { //nolint:gosec // G115: at most 65535, checked with the flags
		return err
	}
	if f.xdsSPIFFEID == "" {
		f.xdsSPIFFEID = xdsServerID(cfg.TrustDomain)
	}
	nodeID := agent.Name
	if f.podName != "" {
		if nodeID, err = envoy.PodNodeID(agent.Name, f.podName, f.podNamespace); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	opts := envoy.BootstrapOptions{
		XDSAddress:        cfg.XDS.Address,
		TrustDomain:       cfg.TrustDomain,
		XDSServerSPIFFEID: f.xdsSPIFFEID,
		Insecure:          cfg.XDS.Insecure,
		CertDir:           f.certDir,
		Cluster:           f.cluster,
		AdminPort:         uint32(f.adminPort), //nolint:gosec // G115: at most 65535, checked with the flags
		AdminSocket:       f.adminSocket,
		NodeID:            nodeID,
	}
	if f.xdsAddress != "" {
		opts.XDSAddress = f.xdsAddress
	} else if host, _, err := net.SplitHostPort(opts.XDSAddress); err == nil && envoy.IsWildcardHost(host) {
		return fmt.Errorf("bootstrap: --xds-address is required: xds.address %s of %s is a wildcard listen address, and an Envoy dialling it would reach its own host", opts.XDSAddress, cfg.Source)
	}
	if f.out != "" {
		if opts.CertDir, err = filepath.Abs(f.out); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	bs, err := envoy.Bootstrap(*agent, opts)
	if err != nil {
		return err
	}
	y, err := envoy.MarshalYAML(bs)
	if err != nil {
		return err
	}
	v := envoy.MinEnvoyVersion
	y = append([]byte(fmt.Sprintf("# Envoy bootstrap of node %s, from meshward bootstrap. Needs Envoy %d.%d.%d or later:\n# older ones ignore fields they do not know (docs/envoy.md).\n", nodeID, v[0], v[1], v[2])), y...)
	if f.watch && opts.Insecure {
		return errors.New("bootstrap: --watch renews the xDS client certificate, and with xds.insecure there is none")
	}
	if opts.Insecure {
		_, _ = fmt.Fprintf(stderr, "meshward: warning: xds.insecure is set: this Envoy fetches its configuration and secrets over plaintext xDS without authenticating; local demos only\n")
	}
	var notAfter time.Time
	if f.out != "" {
		if notAfter, err = writeBootstrapDir(ctx, cfg, agent, opts, y); err != nil {
			return err
		}
	}
	if _, err := stdout.Write(y); err != nil || !f.watch {
		return err
	}
	issue := func(ctx context.Context) (map[string][]byte, time.Time, error) {
		return issueXDSClient(ctx, cfg, agent.SPIFFEID)
	}
	return watchXDSClient(ctx, issue, nodeID, opts.CertDir, notAfter, stderr)
}

// renewAt is when a certificate issued at issued and valid until notAfter
// is renewed: at half its lifetime, as the secrets manager does.
func renewAt(issued, notAfter time.Time) time.Time { return issued.Add(notAfter.Sub(issued) / 2) }

// watchXDSClient renews the node's xDS client certificate in dir at half
// its lifetime until ctx ends (then it returns nil). A failed renewal is
// reported on stderr and retried with backoff (1 s doubling to 1 min),
// also past the current certificate's expiry: Envoy keeps its open
// connection, and reconnects with the next certificate that is written.
func watchXDSClient(ctx context.Context, issue func(context.Context) (map[string][]byte, time.Time, error), node, dir string, notAfter time.Time, stderr io.Writer) error {
	next := renewAt(time.Now(), notAfter)
	retry := time.Second
	for {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		issued := time.Now()
		material, na, err := issue(ctx)
		if err == nil {
			err = writeFiles(dir, material)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil //nolint:nilerr // the context ended: a clean stop, not a failed renewal
			}
			_, _ = fmt.Fprintf(stderr, "meshward: bootstrap: renewing the xDS client certificate of %s failed (current one valid until %s), retrying in %v: %v\n",
				node, notAfter.Format(time.RFC3339), retry, err)
			next = time.Now().Add(retry)
			retry = min(2*retry, time.Minute)
			continue
		}
		notAfter, retry = na, time.Second
		next = renewAt(issued, notAfter)
		_, _ = fmt.Fprintf(stderr, "meshward: bootstrap: renewed the xDS client certificate of %s in %s, valid until %s\n",
			node, dir, notAfter.Format(time.RFC3339))
	}
}

// checkAdminPort refuses an admin port another listener takes on the
// node's host (agents[].host), and the default port when other agents
// share the host, whose Envoys would take it too.
func checkAdminPort(agents []envoy.Agent, agent *envoy.Agent, socket string, port uint32) error {
	if socket != "" {
		return nil
	}
	if port == 0 {
		port = agent.AdminPort
	}
	if port == 0 {
		if mates := envoy.HostMates(agents, agent.Name); len(mates) > 0 {
			return fmt.Errorf("bootstrap: --admin-port, --admin-socket or the agent's adminPort is required: %s shares its host with %s, whose Envoys would also take the default admin port %d (set agents[].host for agents on separate hosts)",
				agent.Name, strings.Join(mates, ", "), envoy.DefaultAdminPort)
		}
		port = envoy.DefaultAdminPort
	}
	if err := envoy.CheckAdminPort(agents, agent.Name, port); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	return nil
}

// writeBootstrapDir writes the bootstrap and, unless xDS is insecure, the
// node's xDS client certificate, key and CA bundle issued by the secrets
// source, with the SDS files pointing at them. It returns the
// certificate's expiry (zero when insecure).
//
// Everything that can be refused is done before dir is made; when writing
// fails, a dir this call made is removed again, so a failed --out leaves
// no folder behind.
func writeBootstrapDir(ctx context.Context, cfg *config.Config, agent *envoy.Agent, opts envoy.BootstrapOptions, bootstrap []byte) (notAfter time.Time, err error) {
	dir := opts.CertDir
	files := map[string][]byte{bootstrapFile: bootstrap}
	if !opts.Insecure {
		material, na, err := issueXDSClient(ctx, cfg, agent.SPIFFEID)
		if err != nil {
			return time.Time{}, err
		}
		notAfter = na
		sds, err := envoy.BootstrapSDSFiles(opts)
		if err != nil {
			return time.Time{}, err
		}
		for name, data := range sds {
			files[name] = data
		}
		for name, data := range material {
			files[name] = data
		}
	}
	created := firstMissing(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return time.Time{}, fmt.Errorf("bootstrap: %w", err)
	}
	if created != "" {
		defer func() {
			if err != nil {
				_ = os.RemoveAll(created) // made by this call: holds only what it wrote
			}
		}()
	}
	return notAfter, writeFiles(dir, files)
}

// writeFiles writes those of the bootstrap folder's files that files
// holds. The key and the SDS files go in last and by rename, so that a
// running Envoy watching dir never reads a half-written file.
func writeFiles(dir string, files map[string][]byte) error {
	for _, name := range []string{envoy.XDSCAFile, envoy.XDSCertFile, envoy.XDSKeyFile, envoy.XDSCASDSFile, envoy.XDSClientSDSFile, bootstrapFile} {
		data, ok := files[name]
		if !ok {
			continue
		}
		if err := writeFileAtomic(filepath.Join(dir, name), data); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	return nil
}

// firstMissing is the outermost folder of dir's path that does not exist
// yet ("" when dir exists): what MkdirAll(dir) would create first.
func firstMissing(dir string) string {
	missing := ""
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			return missing
		}
		missing = d
		if filepath.Dir(d) == d {
			return missing
		}
	}
}

// outRefusal says why `bootstrap --out` cannot write the xDS client files
// of cfg (nil when it can), so that `validate` can say so too.
func outRefusal(cfg *config.Config) error {
	if !cfg.XDS.Insecure && cfg.Secrets.InMemoryCA() {
		return errors.New("--out needs secrets.local.dataDir: an in-memory local CA is new at every start, " +
			"so a certificate issued now would not be trusted by `meshward serve` (or set xds.insecure for a local demo)")
	}
	return nil
}

// issueXDSClient issues the node's certificate (its agent SPIFFE ID) and
// returns the PEM files for XDSCertFile, XDSKeyFile and XDSCAFile, and the
// certificate's expiry.
func issueXDSClient(ctx context.Context, cfg *config.Config, spiffeID string) (map[string][]byte, time.Time, error) {
	if err := outRefusal(cfg); err != nil {
		return nil, time.Time{}, fmt.Errorf("bootstrap: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	mgr, err := secrets.New(cfg.Secrets)
	if err != nil {
		return nil, time.Time{}, err
	}
	src := mgr.Source()
	if l, ok := src.(interface{ Login(context.Context) error }); ok {
		if err := l.Login(ctx); err != nil {
			return nil, time.Time{}, fmt.Errorf("bootstrap: %w", err)
		}
	}
	return issueFrom(ctx, src, spiffeID)
}

// issueFrom issues spiffeID's certificate from src: the files of
// issueXDSClient.
func issueFrom(ctx context.Context, src secrets.Source, spiffeID string) (map[string][]byte, time.Time, error) {
	svid, err := src.IssueSVID(ctx, spiffeID)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("bootstrap: issue xDS client certificate: %w", err)
	}
	key, err := svid.KeyPEM()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("bootstrap: %w", err)
	}
	bundle, err := src.Bundle(ctx)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("bootstrap: trust bundle: %w", err)
	}
	return map[string][]byte{
		envoy.XDSCertFile: svid.ChainPEM(),
		envoy.XDSKeyFile:  key,
		envoy.XDSCAFile:   bundle.PEM(),
	}, svid.NotAfter, nil
}

// writeFileAtomic writes data to a temporary file (0600) next to path and
// renames it over path.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close() // the error above is the one to report
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
