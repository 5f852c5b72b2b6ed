package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"

	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/kube"
)

// Configuration sources of serve --source.
const (
	sourceFile       = "file"
	sourceKubernetes = "kubernetes"
)

// sourceFlags are serve's --source and --kubeconfig.
type sourceFlags struct {
	source     string
	kubeconfig string
}

func addSourceFlags(fs *flag.FlagSet) *sourceFlags {
	f := &sourceFlags{}
	fs.StringVar(&f.source, "source", sourceFile, "where agents, identities, levels, rules and schemas come from: file (the --config file) or kubernetes "+
		"(MeshAgent, AuthorizationRule and MessageSchema objects; the --config file gives everything else)")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "with --source kubernetes: kubeconfig file (default: the in-cluster service account)")
	return f
}

// apply returns the configuration serve runs: file's own, or with --source
// kubernetes the first generation built from the cluster's objects beside
// file's settings, its Origin the cluster's watch. The informers it
// starts stop when ctx ends.
func (f *sourceFlags) apply(ctx context.Context, file *config.Config, configPath string, log *slog.Logger) (*config.Config, error) {
	switch f.source {
	case sourceFile:
		if f.kubeconfig != "" {
			return nil, errors.New("--kubeconfig: only with --source kubernetes")
		}
		return file, nil
	case sourceKubernetes:
	default:
		return nil, fmt.Errorf("--source: %q is not file or kubernetes", f.source)
	}
	if configPath == "" {
		return nil, errors.New("--source kubernetes: --config is required (trust domain, servers, secrets and audit come from the file)")
	}
	// client-go logs (watch errors, retries) through klog, a process-wide
	// logger: send them to serve's, so that the log stays one format.
	klog.SetSlogLogger(log.With("component", "client-go"))
	rc, err := clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--source kubernetes: %w", err)
	}
	src, err := kube.New(rc, file, policyOptions(file), kube.WithLogger(log))
	if err != nil {
		return nil, err
	}
	log.Info("kubernetes: listing MeshAgents, AuthorizationRules, MessageSchemas, Pods and ServiceAccounts", "host", rc.Host)
	if err := src.Start(ctx); err != nil {
		return nil, err
	}
	cfg, err := config.NewOrigin(src).Load()
	if err != nil {
		return nil, err
	}
	log.Info("kubernetes: first generation built", "agents", len(cfg.Agents), "rules", len(cfg.Authz.Policy.Rules))
	return cfg, nil
}
