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
	"github.com/meshward/meshward/cmd/meshward/internal/runtime"
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

// apply returns the configuration serve runs and the Origin of its next
// generations: file's own, watched (configPath "": the embedded
// quickstart), or with --source kubernetes the first generation built
// from the cluster's objects beside file's settings, its Origin the
// cluster's watch. The informers it starts stop when ctx ends.
func (f *sourceFlags) apply(ctx context.Context, file *config.Config, configPath string, log *slog.Logger) (*config.Config, *runtime.Origin, error) {
	switch f.source {
	case sourceFile:
		if f.kubeconfig != "" {
			return nil, nil, errors.New("--kubeconfig: only with --source kubernetes")
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
	// logger: send them to serve's, so that the log stays one format.
	klog.SetSlogLogger(log.With("component", "client-go"))
	rc, err := clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("--source kubernetes: %w", err)
	}
	src, err := kube.New(rc, file, policyOptions(file), kube.WithLogger(log))
	if err != nil {
		return nil, nil, err
	}
	log.Info("kubernetes: listing MeshAgents, AuthorizationRules, MessageSchemas, Pods and ServiceAccounts", "host", rc.Host)
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
