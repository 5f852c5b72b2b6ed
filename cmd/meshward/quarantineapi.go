package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshward/meshward/cmd/meshward/internal/admin"
	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/cmd/meshward/internal/task"
)

// quarantineAPIBy is the `by` of every edit the admin API makes.
const quarantineAPIBy = "admin-api"

// maxQuarantineAPIBody bounds a request body.
const maxQuarantineAPIBody = 64 << 10

// quarantineAPI serves /admin/quarantine and /admin/release on the admin
// server: the same edit of the state file as `meshward quarantine` /
// `meshward release` (in Kubernetes mode, of the MeshAgents'
// spec.quarantine), behind a bearer token.
type quarantineAPI struct {
	cfg   atomic.Pointer[config.Config] // agent names follow reloads
	file  string
	kube  *kube.Editor     // Kubernetes mode: edits MeshAgents, not file
	watch *quarantineWatch // Kubernetes mode: the state listed
	token func(ctx context.Context) ([]byte, error)
	log   *slog.Logger
}

// registerQuarantineAPI adds the API's routes when quarantine.api is
// configured. The token must be readable now: serve does not start with
// an API nobody can use, nor one that would accept an empty token.
func registerQuarantineAPI(ctx context.Context, adm *admin.Server, d *serveDeps) ([]task.Task, error) {
	api := d.cfg.Quarantine.API
	if !api.Enabled() {
		return nil, nil
	}
	a := &quarantineAPI{file: d.cfg.QuarantineFile(), log: d.log}
	if d.quarantineKube != nil {
		a.file, a.kube, a.watch = "", d.quarantineKube, d.quarantine
	}
	a.cfg.Store(d.cfg)
	switch {
	case api.TokenFile != "":
		path := api.TokenFile
		a.token = func(context.Context) ([]byte, error) {
			raw, err := os.ReadFile(path) //nolint:gosec // G304: the configured token file
			if err != nil {
				return nil, err
			}
			return bytes.TrimSpace(raw), nil
		}
	default:
		mgr, err := d.secretsManager()
		if err != nil {
			return nil, fmt.Errorf("quarantine.api.tokenSecret: %w", err)
		}
		name := api.TokenSecret
		a.token = func(ctx context.Context) ([]byte, error) {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			raw, err := mgr.Secret(ctx, name)
			return bytes.TrimSpace(raw), err
		}
	}
	tok, err := a.token(ctx)
	if err != nil {
		return nil, fmt.Errorf("quarantine.api: token: %w", err)
	}
	if len(tok) == 0 {
		return nil, errors.New("quarantine.api: the token is empty")
	}
	adm.Handle("/admin/quarantine", http.HandlerFunc(a.quarantine))
	adm.Handle("/admin/release", http.HandlerFunc(a.release))
	var tasks []task.Task
	if d.origin.Subscribe("quarantine-api", nil, func(_ context.Context, c *config.Config, err error) {
		if err == nil {
			a.cfg.Store(c)
		}
	}) {
		tasks = append(tasks, configReloadTask(d))
	}
	return tasks, nil
}

// apiError is the body of every refusal.
type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func writeAPIError(w http.ResponseWriter, code int, kind, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(apiError{Error: kind, Message: msg})
}

func writeAPI(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(v)
}

// authorized checks the bearer token in constant time (over SHA-256
// digests, so the length does not show either). A token that cannot be
// read refuses every request.
func (a *quarantineAPI) authorized(w http.ResponseWriter, r *http.Request) bool {
	want, err := a.token(r.Context())
	if err != nil || len(want) == 0 {
		a.log.Error("quarantine API: cannot read the token: refusing the request", "error", err)
		writeAPIError(w, http.StatusServiceUnavailable, "token_unavailable", "the API's token cannot be read; see serve's log")
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	gh, wh := sha256.Sum256([]byte(got)), sha256.Sum256(want)
	if !ok || subtle.ConstantTimeCompare(gh[:], wh[:]) != 1 {
		a.log.Warn("quarantine API: request refused: missing or wrong bearer token", "remote", r.RemoteAddr, "path", r.URL.Path)
		w.Header().Set("WWW-Authenticate", `Bearer realm="meshward"`)
		writeAPIError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token (Authorization: Bearer TOKEN)")
		return false
	}
	return true
}

// quarantineRequest is the body of POST /admin/quarantine and
// /admin/release.
type quarantineRequest struct {
	Identity string `json:"identity"`
	Reason   string `json:"reason"`
}

// quarantine: GET lists the state file, POST quarantines.
func (a *quarantineAPI) quarantine(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(w, r) {
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if a.kube != nil {
			var s *quarantine.State
			a.watch.subscribeOnce(func(q *quarantineSnapshot) { s = q.state })
			writeAPI(w, map[string]any{"source": kubeQuarantineSource, "quarantined": s.Quarantined, "released": s.Released})
			return
		}
		s, err := quarantine.Load(a.file)
		if err != nil {
			a.log.Error("quarantine API: cannot read the state file", "error", err)
			writeAPIError(w, http.StatusInternalServerError, "state_unreadable", "the quarantine state file cannot be read; see serve's log")
			return
		}
		if s.Quarantined == nil {
			s.Quarantined = []quarantine.Entry{}
		}
		writeAPI(w, map[string]any{"file": a.file, "quarantined": s.Quarantined, "released": s.Released})
	case http.MethodPost:
		a.edit(w, r, "quarantine")
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		writeAPIError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" /admin/quarantine: use GET (list) or POST (quarantine)")
	}
}

// release: POST releases.
func (a *quarantineAPI) release(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(w, r) {
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeAPIError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" /admin/release: use POST")
		return
	}
	a.edit(w, r, "release")
}

func (a *quarantineAPI) edit(w http.ResponseWriter, r *http.Request, name string) {
	var req quarantineRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxQuarantineAPIBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeAPIError(w, http.StatusBadRequest, "bad_request", `body: want {"identity": "AGENT|SPIFFE-ID", "reason": "..."}: `+err.Error())
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeAPIError(w, http.StatusBadRequest, "bad_request", "body: more than one JSON value")
		return
	}
	if req.Identity == "" {
		writeAPIError(w, http.StatusBadRequest, "bad_request", "body: identity is required (an agent name or a SPIFFE ID)")
		return
	}
	var e quarantine.Entry
	var file string
	var err error
	if a.kube != nil {
		ctx, cancel := context.WithTimeout(r.Context(), kubeEditTimeout)
		defer cancel()
		e, file, err = kubeQuarantineEdit(ctx, a.kube, a.cfg.Load(), name, req.Identity, req.Reason, quarantineAPIBy)
	} else {
		e, file, err = quarantineEdit(a.cfg.Load(), name, req.Identity, req.Reason, quarantineAPIBy)
	}
	var ie *identityError
	switch {
	case errors.As(err, &ie):
		writeAPIError(w, http.StatusBadRequest, "unknown_identity", ie.Error())
		return
	case errors.Is(err, quarantine.ErrNoChange):
		writeAPIError(w, http.StatusConflict, "no_change", err.Error())
		return
	case err != nil:
		a.log.Error("quarantine API: edit failed", "action", name, "identity", req.Identity, "error", err)
		writeAPIError(w, http.StatusInternalServerError, "edit_failed", "the quarantine state could not be edited; see serve's log")
		return
	}
	a.log.Warn("quarantine API: "+name, "spiffe_id", e.SPIFFEID, "by", e.By, "remote", r.RemoteAddr, "file", file)
	status := "quarantined"
	if name == "release" {
		status = "released"
	}
	body := map[string]any{"status": status, "spiffeID": e.SPIFFEID, "reason": e.Reason, "by": e.By, "at": e.At}
	if a.kube != nil {
		body["agents"] = strings.Split(e.Agent, ", ")
	} else {
		body["file"] = file
	}
	writeAPI(w, body)
}
