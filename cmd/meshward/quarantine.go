package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/envoy"
)

// errNoQuarantineFile: the configuration says where no state file is.
var errNoQuarantineFile = errors.New("no quarantine state file: set quarantine.file or secrets.local.dataDir in the configuration")

func runQuarantine(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return editQuarantine(ctx, "quarantine", args, stdout, stderr)
}

func runRelease(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return editQuarantine(ctx, "release", args, stdout, stderr)
}

// kubeEditTimeout bounds one edit of MeshAgents through the API server.
const kubeEditTimeout = 30 * time.Second

// editQuarantine is `meshward quarantine` and `meshward release`: one
// atomic edit of the state file, or with --source kubernetes a patch of
// the MeshAgents' spec.quarantine; a running serve applies it when it
// sees the change.
func editQuarantine(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet(name, stderr)
	setUsage(fs, "Usage: meshward "+name+" --config FILE [flags] AGENT|SPIFFE-ID\n\n"+
		"AGENT is the name of an entry of agents (with --source kubernetes, of a MeshAgent: NAME or NAMESPACE/NAME);\n"+
		"a SPIFFE ID must be of the trust domain.\n\nFlags:\n")
	path := fs.String("config", "", "configuration file (default: the embedded quickstart, which has no state file)")
	source := fs.String("source", sourceFile, "where the quarantine state is: file (the state file) or kubernetes (the MeshAgents' spec.quarantine, as serve --source kubernetes)")
	kubeconfig := fs.String("kubeconfig", "", "with --source kubernetes: kubeconfig file (default: the in-cluster service account)")
	reason := new(string)
	if name == "quarantine" {
		reason = fs.String("reason", "", "why, recorded in the state file and the audit event")
	}
	pos, help, err := parseArgs(fs, args)
	if help || err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	by, err := operator()
	if err != nil {
		return fmt.Errorf("%s: who is running this: %w", name, err)
	}
	var e quarantine.Entry
	var file string
	switch *source {
	case sourceFile:
		if *kubeconfig != "" {
			return fmt.Errorf("%s: --kubeconfig: only with --source kubernetes", name)
		}
		e, file, err = quarantineEdit(cfg, name, pos[0], *reason, by)
	case sourceKubernetes:
		var rc *rest.Config
		if rc, _, err = kubeClientConfig(*kubeconfig); err != nil {
			return fmt.Errorf("%s: --source kubernetes: %w", name, err)
		}
		dyn, derr := dynamic.NewForConfig(rc)
		if derr != nil {
			return fmt.Errorf("%s: --source kubernetes: %w", name, derr)
		}
		ectx, cancel := context.WithTimeout(ctx, kubeEditTimeout)
		defer cancel()
		e, file, err = kubeQuarantineEdit(ectx, kube.NewEditor(dyn, cfg.TrustDomain), cfg, name, pos[0], *reason, by)
	default:
		return fmt.Errorf("%s: --source: %q is not file or kubernetes", name, *source)
	}
	if err != nil {
		return err
	}
	verb := "quarantined"
	if name == "release" {
		verb = "released"
	}
	id := e.SPIFFEID
	_, err = fmt.Fprintf(stdout, "%s %s (by %s) in %s\n", verb, id, by, file)
	return err
}

// identityError is an argument that names no identity that can be
// quarantined.
type identityError struct{ err error }

func (e *identityError) Error() string { return e.err.Error() }
func (e *identityError) Unwrap() error { return e.err }

// quarantineEdit is the one edit of the state file behind `meshward
// quarantine` / `meshward release` and the admin API: name is
// "quarantine" or "release", arg an agent name or SPIFFE ID, by who asks.
// The state file's flock serialises it with every other edit; a running
// serve's watch applies and audits it. It returns the entry written and
// the file. An arg that resolves to nothing is an *identityError; an edit
// that changes nothing wraps quarantine.ErrNoChange.
func quarantineEdit(cfg *config.Config, name, arg, reason, by string) (quarantine.Entry, string, error) {
	file := cfg.QuarantineFile()
	if file == "" {
		return quarantine.Entry{}, "", fmt.Errorf("%s: %w", name, errNoQuarantineFile)
	}
	id, err := resolveIdentity(cfg, arg)
	if err != nil {
		return quarantine.Entry{}, "", fmt.Errorf("%s: %w", name, &identityError{err})
	}
	e := quarantine.Entry{SPIFFEID: id, Reason: reason, By: by, At: time.Now().UTC()}
	edit := quarantine.Quarantine
	if name == "release" {
		edit = quarantine.Release
	}
	if _, err := edit(file, e); err != nil {
		return quarantine.Entry{}, "", err
	}
	return e, file, nil
}

// kubeQuarantineEdit is quarantineEdit in Kubernetes mode: it sets or
// removes spec.quarantine of the MeshAgents arg names (NAME,
// NAMESPACE/NAME or a SPIFFE ID) through the API server; every serve
// replica's watch applies and audits it. It returns the entry asked for
// and the agents patched.
func kubeQuarantineEdit(ctx context.Context, ed *kube.Editor, cfg *config.Config, name, arg, reason, by string) (quarantine.Entry, string, error) {
	if strings.HasPrefix(arg, "spiffe://") {
		if _, err := resolveIdentity(cfg, arg); err != nil {
			return quarantine.Entry{}, "", fmt.Errorf("%s: %w", name, &identityError{err})
		}
	}
	now := time.Now().UTC()
	var res kube.Edited
	var err error
	if name == "release" {
		res, err = ed.Release(ctx, arg, by, now)
	} else {
		res, err = ed.Quarantine(ctx, arg, reason, by, now)
	}
	if errors.Is(err, kube.ErrNoAgent) || errors.Is(err, kube.ErrAmbiguous) {
		return quarantine.Entry{}, "", fmt.Errorf("%s: %w", name, &identityError{err})
	}
	if err != nil {
		return quarantine.Entry{}, "", fmt.Errorf("%s: %w", name, err)
	}
	agents := strings.Join(res.Agents, ", ")
	return quarantine.Entry{SPIFFEID: res.SPIFFEID, Reason: reason, By: by, At: now, Agent: agents}, "MeshAgent " + agents, nil
}

// resolveIdentity maps an agent name to its SPIFFE ID, and checks a
// SPIFFE ID is one of the trust domain.
func resolveIdentity(cfg *config.Config, arg string) (string, error) {
	if strings.HasPrefix(arg, "spiffe://") {
		id, err := spiffeid.FromString(arg)
		if err != nil {
			return "", fmt.Errorf("%q: %w", arg, err)
		}
		if id.TrustDomain().Name() != cfg.TrustDomain || id.Path() == "" {
			return "", fmt.Errorf("%q is not a workload SPIFFE ID of trust domain %q", arg, cfg.TrustDomain)
		}
		if envoy.IsReservedSPIFFEID(id.String()) {
			return "", fmt.Errorf("%q is meshward's own identity, which cannot be quarantined", arg)
		}
		return id.String(), nil
	}
	for _, a := range cfg.Agents {
		if a.Name == arg {
			return a.SPIFFEID, nil
		}
	}
	return "", fmt.Errorf("%q is neither a SPIFFE ID nor the name of an agent of %s", arg, cfg.Source)
}

// operator names the OS user running the command: the user name, or
// uid:N when the user database has none.
func operator() (string, error) {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username, nil
	}
	if uid := os.Getuid(); uid >= 0 {
		return "uid:" + strconv.Itoa(uid), nil
	}
	return "", errors.New("no user name and no uid")
}
