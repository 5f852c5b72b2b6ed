package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/extauthz"
	"github.com/meshward/meshward/extauthz/audit"
)

// quarantinePoll is how often serve re-reads the quarantine file besides
// watching it, in case a change notification is missed (a folder that
// did not exist at start, a network file system).
const quarantinePoll = 2 * time.Second

// Log field names of quarantine events.
const (
	logSPIFFEID = "spiffe_id"
	logBy       = "by"
	logReason   = "reason"
	logFile     = "file"
	logSource   = "source"
	logAgent    = "agent"
	logError    = "error"
)

// kubeQuarantineSource names where the state comes from in Kubernetes
// mode, in logs and audit events.
const kubeQuarantineSource = "kubernetes: MeshAgent spec.quarantine"

// quarantineSnapshot is one applied state: the file's entries and the
// immutable set ext_authz decides with.
type quarantineSnapshot struct {
	state *quarantine.State
	set   *extauthz.Quarantine
}

// quarantineWatch serves the quarantine state file: it loads it at start
// (serve refuses to start on a file it cannot read), then applies every
// change to its subscribers in one step each; a file that does not parse
// is logged and the last good state stays. In Kubernetes mode (path "")
// the states come from the MeshAgents' spec.quarantine instead (set).
type quarantineWatch struct {
	path  string // "": states are set
	log   *slog.Logger
	audit *audit.Logger // nil: events are only logged

	mu     sync.Mutex
	raw    []byte
	cur    *quarantineSnapshot
	subs   []func(*quarantineSnapshot)
	broken *quarantineProblem // the file's content does not load; nil when it does
}

// quarantineProblem is a state file serve cannot load while serving: what
// is wrong and since when. The last good state stays enforced meanwhile.
type quarantineProblem struct {
	err   error
	since time.Time
}

func newQuarantineWatch(path string, log *slog.Logger, al *audit.Logger) (*quarantineWatch, error) {
	w := &quarantineWatch{path: path, log: log, audit: al}
	raw, st, err := w.read()
	if err != nil {
		return nil, err
	}
	w.apply(raw, st, true)
	return w, nil
}

// newSourceQuarantineWatch serves the states of a configuration source
// (Kubernetes mode), st the first: its owner calls set with each new one.
func newSourceQuarantineWatch(st *quarantine.State, log *slog.Logger, al *audit.Logger) *quarantineWatch {
	w := &quarantineWatch{log: log, audit: al}
	w.apply(nil, st, true)
	return w
}

// set applies a state of the configuration source.
func (w *quarantineWatch) set(st *quarantine.State) { w.apply(nil, st, false) }

// where is the log field naming where the state is.
func (w *quarantineWatch) where() []any {
	if w.path == "" {
		return []any{logSource, kubeQuarantineSource}
	}
	return []any{logFile, w.path}
}

func (w *quarantineWatch) read() ([]byte, *quarantine.State, error) {
	raw, err := os.ReadFile(w.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &quarantine.State{Version: quarantine.Version}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("quarantine: %w", err)
	}
	st, err := quarantine.Parse(raw, w.path)
	return raw, st, err
}

// subscribe calls fn with the current state now and with every new one.
func (w *quarantineWatch) subscribe(fn func(*quarantineSnapshot)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.subs = append(w.subs, fn)
	fn(w.cur)
}

// subscribeOnce calls fn with the current state, once.
func (w *quarantineWatch) subscribeOnce(fn func(*quarantineSnapshot)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fn(w.cur)
}

// apply swaps in st, audits and logs what changed, and hands it to every
// subscriber. At start every entry is reported (it may have been written
// while serve was down).
func (w *quarantineWatch) apply(raw []byte, st *quarantine.State, start bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	old := &quarantine.State{}
	if w.cur != nil {
		old = w.cur.state
	}
	w.raw = raw
	w.broken = nil
	w.cur = &quarantineSnapshot{state: st, set: extauthz.NewQuarantine(st.IDs())}
	for _, fn := range w.subs {
		fn(w.cur)
	}
	msg := "agent quarantined: every Check from or to it is denied"
	if start {
		msg = "agent quarantined (in the state at start): every Check from or to it is denied"
	}
	for _, e := range st.Quarantined {
		if _, was := old.Find(e.SPIFFEID); !was {
			w.event(audit.KindAgentQuarantined, msg, e)
		}
	}
	for _, e := range old.Quarantined {
		if _, still := st.Find(e.SPIFFEID); still {
			continue
		}
		r, ok := st.LastRelease(e.SPIFFEID)
		if !ok {
			r = quarantine.Entry{SPIFFEID: e.SPIFFEID, Agent: e.Agent, By: "unknown (entry removed from the file by hand)"}
		}
		w.event(audit.KindAgentReleased, "agent released from quarantine", r)
	}
}

func (w *quarantineWatch) event(kind, msg string, e quarantine.Entry) {
	at := ""
	if !e.At.IsZero() {
		at = e.At.UTC().Format(time.RFC3339Nano)
	}
	args := append([]any{logSPIFFEID, e.SPIFFEID, logBy, e.By, logReason, e.Reason}, w.where()...)
	if e.Agent != "" {
		args = append(args, logAgent, e.Agent)
	}
	w.log.Warn(msg, args...)
	if w.audit == nil {
		return
	}
	detail := map[string]string{"spiffe_id": e.SPIFFEID, "by": e.By}
	if w.path != "" {
		detail["file"] = w.path
	} else {
		detail["source"] = kubeQuarantineSource
	}
	if e.Agent != "" {
		detail["agent"] = e.Agent
	}
	if e.Reason != "" {
		detail["reason"] = e.Reason
	}
	if at != "" {
		detail["at"] = at
	}
	if err := w.audit.Event(kind, msg, detail); err != nil {
		// The change is applied all the same: a quarantine only denies.
		w.log.Error("audit of a quarantine change failed", logSPIFFEID, e.SPIFFEID, logError, err)
	}
}

// check re-reads the file and applies it when its content changed.
func (w *quarantineWatch) check() {
	raw, st, err := w.read()
	w.mu.Lock()
	same := bytes.Equal(raw, w.raw) && (raw == nil) == (w.raw == nil) && w.broken == nil
	w.mu.Unlock()
	if same && err == nil {
		return
	}
	if err != nil {
		// Fail closed: nothing is applied, so every identity the last
		// good state quarantines stays quarantined, and nothing new is.
		w.mu.Lock()
		unchanged := w.broken != nil && bytes.Equal(raw, w.raw) && (raw == nil) == (w.raw == nil)
		w.raw = raw // report a broken content once
		if !unchanged {
			w.broken = &quarantineProblem{err: err, since: time.Now()}
		}
		w.mu.Unlock()
		if !unchanged {
			w.log.Error("quarantine file unreadable; keeping the current quarantine", logFile, w.path, logError, err)
		}
		return
	}
	w.apply(raw, st, false)
}

// problem returns what is wrong with the state file now, nil when its
// last content loaded.
func (w *quarantineWatch) problem() *quarantineProblem {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.broken
}

// Run applies changes until ctx ends: on every change notification in the
// file's folder and every quarantinePoll.
func (w *quarantineWatch) Run(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("quarantine: watch: %w", err)
	}
	defer fw.Close() //nolint:errcheck // nothing to do on close
	// The folder is made so that it can be watched before the first
	// `meshward quarantine` writes the file.
	dir := filepath.Dir(w.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		w.log.Warn("quarantine file's folder cannot be made; polling it", logFile, w.path, logError, err)
	} else if err := fw.Add(dir); err != nil {
		w.log.Warn("quarantine file's folder not watched; polling it", logFile, w.path, logError, err)
	}
	tick := time.NewTicker(quarantinePoll)
	defer tick.Stop()
	base := filepath.Base(w.path)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return nil
			}
			if filepath.Base(ev.Name) == base {
				w.check()
			}
		case err, ok := <-fw.Errors:
			if ok {
				w.log.Warn("quarantine watch", logError, err)
			}
		case <-tick.C:
			w.check()
		}
	}
}
