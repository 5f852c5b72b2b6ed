// Package quarantine is meshward's quarantine state file: the SPIFFE IDs
// that are quarantined, each with why, by whom and when, as one JSON
// document (mode 0600). `meshward quarantine` and `meshward release` edit
// it by writing a temporary file and renaming it over the old one, so a
// reader sees the old or the new state, never half of one; `serve` watches
// it.
package quarantine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Version is the file format's version.
const Version = 1

// maxReleased bounds the releases a file remembers (for the audit event
// of who released).
const maxReleased = 100

// Entry is one quarantined identity, or one release.
type Entry struct {
	SPIFFEID string    `json:"spiffeID"`
	Reason   string    `json:"reason,omitempty"`
	By       string    `json:"by"`
	At       time.Time `json:"at"`
	// Agent, in Kubernetes mode, is the MeshAgent (namespace/name) whose
	// spec.quarantine this is.
	Agent string `json:"agent,omitempty"`
}

// State is the file's content.
type State struct {
	Version int `json:"version"`
	// Quarantined are the identities quarantined now, sorted by SPIFFE ID.
	Quarantined []Entry `json:"quarantined"`
	// Released are the latest releases, newest last, at most 100.
	Released []Entry `json:"released,omitempty"`
}

// ErrNoChange is returned by Quarantine of an identity already
// quarantined and by Release of one that is not.
var ErrNoChange = errors.New("no change")

// IDs are the quarantined SPIFFE IDs.
func (s *State) IDs() []string {
	ids := make([]string, len(s.Quarantined))
	for i, e := range s.Quarantined {
		ids[i] = e.SPIFFEID
	}
	return ids
}

// Find returns the quarantine entry of id.
func (s *State) Find(id string) (Entry, bool) {
	for _, e := range s.Quarantined {
		if e.SPIFFEID == id {
			return e, true
		}
	}
	return Entry{}, false
}

// LastRelease returns the newest release of id.
func (s *State) LastRelease(id string) (Entry, bool) {
	for i := len(s.Released) - 1; i >= 0; i-- {
		if s.Released[i].SPIFFEID == id {
			return s.Released[i], true
		}
	}
	return Entry{}, false
}

// Load reads the state file; a missing file is the empty state. A file
// that does not parse is an error: its readers keep what they had.
func Load(path string) (*State, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Version: Version}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	return Parse(raw, path)
}

// Parse decodes a state file's content (strictly: an unknown field is an
// error); source names it in errors.
func Parse(raw []byte, source string) (*State, error) {
	var s State
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("quarantine: %s: %w", source, err)
	}
	// Anything after the document (two documents run together, a torn
	// hand edit) is an error too: its first document alone may be a
	// state that releases.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("quarantine: %s: data after the JSON document", source)
	}
	if s.Version != Version {
		return nil, fmt.Errorf("quarantine: %s: version %d, want %d", source, s.Version, Version)
	}
	for i, e := range s.Quarantined {
		if !strings.HasPrefix(e.SPIFFEID, "spiffe://") {
			return nil, fmt.Errorf("quarantine: %s: quarantined[%d].spiffeID: %q is not a SPIFFE ID", source, i, e.SPIFFEID)
		}
	}
	return &s, nil
}

// Quarantine adds e to the file at path (created when missing).
func Quarantine(path string, e Entry) (*State, error) {
	return edit(path, func(s *State) error {
		if _, ok := s.Find(e.SPIFFEID); ok {
			return fmt.Errorf("quarantine: %s is already quarantined: %w", e.SPIFFEID, ErrNoChange)
		}
		s.Quarantined = append(s.Quarantined, e)
		slices.SortFunc(s.Quarantined, func(a, b Entry) int { return strings.Compare(a.SPIFFEID, b.SPIFFEID) })
		return nil
	})
}

// Release removes e.SPIFFEID from the file at path, remembering e as its
// release.
func Release(path string, e Entry) (*State, error) {
	return edit(path, func(s *State) error {
		i := slices.IndexFunc(s.Quarantined, func(q Entry) bool { return q.SPIFFEID == e.SPIFFEID })
		if i < 0 {
			return fmt.Errorf("quarantine: %s is not quarantined: %w", e.SPIFFEID, ErrNoChange)
		}
		s.Quarantined = slices.Delete(s.Quarantined, i, i+1)
		s.Released = append(s.Released, e)
		if n := len(s.Released) - maxReleased; n > 0 {
			s.Released = slices.Delete(s.Released, 0, n)
		}
		return nil
	})
}

// edit loads, changes and atomically replaces the file: a temporary file
// in the same folder, synced, renamed over path. Edits hold an exclusive
// flock on a lock file beside it (.NAME.lock), so two commands at the same
// moment both apply.
func edit(path string, change func(*State) error) (*State, error) {
	unlock, err := lock(path)
	if err != nil {
		return nil, fmt.Errorf("quarantine: lock: %w", err)
	}
	defer unlock()
	s, err := Load(path)
	if err != nil {
		return nil, err
	}
	if err := change(s); err != nil {
		return nil, err
	}
	if s.Quarantined == nil {
		s.Quarantined = []Entry{}
	}
	raw, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	if err := writeAtomic(path, append(raw, '\n')); err != nil {
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	return s, nil
}

// lock takes the exclusive lock of path's edits, waiting for it.
func lock(path string) (unlock func(), err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "."+filepath.Base(path)+".lock"), os.O_RDWR|os.O_CREATE, 0o600) //nolint:gosec // G304: beside the configured state file
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil { //nolint:gosec // G115: a file descriptor
		f.Close() //nolint:errcheck,gosec // the flock error is reported
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) //nolint:gosec // G115: a file descriptor
		_ = f.Close()
	}, nil
}

func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) //nolint:errcheck // gone after the rename; removed on failure
	if err := f.Chmod(0o600); err != nil {
		f.Close() //nolint:errcheck,gosec // the chmod error is reported
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close() //nolint:errcheck,gosec // the write error is reported
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close() //nolint:errcheck,gosec // the sync error is reported
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil { //nolint:gosec // G304: the state file's own folder
		_ = d.Sync() // best effort: the rename is done
		_ = d.Close()
	}
	return nil
}
