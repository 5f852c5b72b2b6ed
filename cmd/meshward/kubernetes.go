package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/runtime"
)

// Configuration sources of serve --source.
const (
	sourceFile       = "file"
	sourceKubernetes = "kubernetes"
)

var klogOnce sync.Once

// The API client's rate limit (client-go's token bucket), unless the
// kubeconfig sets one.
const (
	clientQPS   = 50
	clientBurst = 100
)

// sourceFlags are serve's --source and --kubeconfig.
type sourceFlags struct {
	source         string
	kubeconfig     string
	leaseNamespace string
	leaseName      string
}

func addSourceFlags(fs *flag.FlagSet) *sourceFlags {
	f := &sourceFlags{}
	fs.StringVar(&f.source, "source", sourceFile, "where agents, identities, levels, rules and schemas come from: file (the --config file) or kubernetes "+
		"(MeshAgent, AuthorizationRule and MessageSchema objects; the --config file gives everything else)")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "with --source kubernetes: kubeconfig file (default: the in-cluster service account)")
	fs.StringVar(&f.leaseNamespace, "lease-namespace", "", "with --source kubernetes: namespace of the Lease the replicas elect the status writer with "+
		"(default: the kubeconfig context's namespace; in a pod, its own)")
	fs.StringVar(&f.leaseName, "lease-name", "meshward", "with --source kubernetes: name of that Lease (replicas of one mesh share it)")
	return f
}

// apply returns the configuration serve runs and the Origin of its next
// generations: file's own, watched (configPath "": the embedded
// quickstart), or with --source kubernetes the first generation built
// from the cluster's objects beside file's settings, its Origin the
// cluster's watch. The informers it starts stop when ctx ends.
func (f *sourceFlags) apply(ctx context.Context, file *config.Config, configPath string, log *slog.Logger) (*config.Config, *runtime.Origin, error) {
	switch f.source {
	case sourceFile:
		if f.kubeconfig != "" || f.leaseNamespace != "" {
			return nil, nil, errors.New("--kubeconfig, --lease-namespace: only with --source kubernetes")
		}
		if err := file.ValidateQuarantineFile(); err != nil {
			return nil, nil, err
		}
		return file, runtime.FileOrigin(configPath), nil
	case sourceKubernetes:
	default:
		return nil, nil, fmt.Errorf("--source: %q is not file or kubernetes", f.source)
	}
	if configPath == "" {
		return nil, nil, errors.New("--source kubernetes: --config is required (trust domain, servers, secrets and audit come from the file)")
	}
	// client-go logs (watch errors, retries) through klog, a process-wide
	// logger: send them to serve's, so that the log stays one format. Set
	// once: klog's setter is not safe beside running informers (tests run
	// several serves in one process; the first one's logger gets them all).
	klogOnce.Do(func() { klog.SetSlogLogger(log.With("component", "client-go")) })
	// As kubectl: the file, or in a pod its ServiceAccount; the
	// namespace the context's, or in a pod its own.
	rc, cc, err := kubeClientConfig(f.kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("--source kubernetes: %w", err)
	}
	// client-go's default rate (5 requests/s, bursts of 10) would take
	// minutes for the first status of a thousand objects.
	if rc.QPS == 0 {
		rc.QPS, rc.Burst = clientQPS, clientBurst
	}
	lease := kube.Lease{Namespace: f.leaseNamespace, Name: f.leaseName}
	if lease.Namespace == "" {
		if lease.Namespace, _, err = cc.Namespace(); err != nil {
			return nil, nil, fmt.Errorf("--lease-namespace: %w", err)
		}
	}
	if lease.Identity, err = leaseIdentity(); err != nil {
		return nil, nil, err
	}
	src, err := kube.New(rc, file, policyOptions(file), kube.WithLogger(log), kube.WithLease(lease))
	if err != nil {
		return nil, nil, err
	}
	log.Info("kubernetes: listing MeshAgents, AuthorizationRules, MessageSchemas, Pods and ServiceAccounts", "host", rc.Host,
		"lease", lease.Namespace+"/"+lease.Name, "identity", lease.Identity)
	if err := src.Start(ctx); err != nil {
		return nil, nil, err
	}
	origin := runtime.NewOrigin(src)
	cfg, err := origin.Load()
	if err != nil {
		return nil, nil, err
	}
	log.Info("kubernetes: first generation built", "agents", len(cfg.Agents), "rules", len(cfg.Authz.Policy.Rules))
	return cfg, origin, nil
}

// kubeClientConfig is the API server's client configuration as kubectl
// finds it: the kubeconfig file, or in a pod its ServiceAccount.
func kubeClientConfig(kubeconfig string) (*rest.Config, clientcmd.ClientConfig, error) {
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}, &clientcmd.ConfigOverrides{})
	rc, err := cc.ClientConfig()
	return rc, cc, err
}

// leaseIdentity is this replica's identity for the Lease: the host name
// (in a pod, the pod's name) and a random suffix, so that two processes
// on one host, or a restarted pod, are never taken for each other.
func leaseIdentity() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("lease identity: %w", err)
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("lease identity: %w", err)
	}
	return host + "_" + hex.EncodeToString(b), nil
}
