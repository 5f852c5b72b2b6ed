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

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/envoy"
)

// errNoQuarantineFile: the configuration says where no state file is.
var errNoQuarantineFile = errors.New("no quarantine state file: set quarantine.file or secrets.local.dataDir in the configuration")

func runQuarantine(_ context.Context, args []string, stdout, stderr io.Writer) error {
	return editQuarantine("quarantine", args, stdout, stderr)
}

func runRelease(_ context.Context, args []string, stdout, stderr io.Writer) error {
	return editQuarantine("release", args, stdout, stderr)
}

// editQuarantine is `meshward quarantine` and `meshward release`: one
// atomic edit of the state file; a running serve applies it when it sees
// the file change.
func editQuarantine(name string, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet(name, stderr)
	setUsage(fs, "Usage: meshward "+name+" --config FILE [flags] AGENT|SPIFFE-ID\n\n"+
		"AGENT is the name of an entry of agents; a SPIFFE ID must be of the trust domain.\n\nFlags:\n")
	path := fs.String("config", "", "configuration file (default: the embedded quickstart, which has no state file)")
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
	e, file, err := quarantineEdit(cfg, name, pos[0], *reason, by)
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
