// Package admin is meshward's admin HTTP server: /healthz (the process is
// alive), /readyz (every enabled component is ready) and /metrics
// (Prometheus, from the registry it is given), plus the pages serve adds:
// /debug/xds and the read-only status page /ui/ (package ui).
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Checker reports whether a component is ready; a nil error means ready.
type Checker interface {
	Ready() error
}

// CheckerFunc adapts a function to Checker.
type CheckerFunc func() error

// Ready calls f.
func (f CheckerFunc) Ready() error { return f() }

// Server is the admin HTTP server.
type Server struct {
	addr     string
	mux      *http.ServeMux
	checks   map[string]Checker
	log      *slog.Logger
	listener atomic.Pointer[net.Listener]
}

// New returns an admin server for addr. checks name each enabled
// component's readiness; reg is what /metrics serves.
func New(addr string, reg prometheus.Gatherer, checks map[string]Checker, log *slog.Logger) *Server {
	s := &Server{addr: addr, mux: http.NewServeMux(), checks: checks, log: log}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "alive"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	return s
}

// Handle adds a page, e.g. /debug/xds or the status page's routes.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler returns the server's routes, for tests.
func (s *Server) Handler() http.Handler { return s.mux }

// Addr returns the bound address once Run listens, else nil.
func (s *Server) Addr() net.Addr {
	if l := s.listener.Load(); l != nil {
		return (*l).Addr()
	}
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	notReady := map[string]string{}
	names := make([]string, 0, len(s.checks))
	for name, c := range s.checks {
		names = append(names, name)
		if err := c.Ready(); err != nil {
			notReady[name] = err.Error()
		}
	}
	sort.Strings(names)
	if len(notReady) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "notReady": notReady})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "components": names})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// WarnWildcard is logged (and printed by validate) when the admin server
// listens on a wildcard address: it has no authentication.
const WarnWildcard = "admin server on a wildcard address (admin.address): it has no authentication, " +
	"so anyone who reaches the port reads /metrics (SPIFFE IDs included), /readyz, /debug/xds " +
	"(node names, versions, NACK messages) and /ui (the same, plus the last denies: principals, hosts, paths); " +
	"bind it to loopback or a private interface"

// Wildcard reports whether addr (host:port) listens on every interface:
// no host, 0.0.0.0 or ::.
func Wildcard(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// Listen binds the server's address; Run serves on it. Splitting the two
// lets callers report readiness only after every listener is up. A
// wildcard address is served, with a warning.
func (s *Server) Listen() error {
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	if tcp, ok := l.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		s.log.Warn(WarnWildcard, "address", l.Addr().String())
	}
	s.listener.Store(&l)
	return nil
}

// Run serves until ctx is done, then shuts down within five seconds.
func (s *Server) Run(ctx context.Context) error {
	if s.listener.Load() == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	l := *s.listener.Load()
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	s.log.Info("admin server listening", "address", l.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
