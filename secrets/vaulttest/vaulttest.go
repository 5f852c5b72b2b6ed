// Package vaulttest starts a real Vault dev server for tests: the pinned
// build that `make vault` compiles (see vaultbin/), on a free loopback port
// with a random root token, stopped by t.Cleanup.
package vaulttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// EnvBinary names the environment variable holding the Vault binary's path.
// The Makefile sets it.
const EnvBinary = "MESHWARD_VAULT_BIN"

// Server is a running Vault dev server.
type Server struct {
	// Addr is the server's URL, e.g. http://127.0.0.1:41234.
	Addr string
	// Token is the root token.
	Token string

	t    testing.TB
	bin  string
	port string
	mu   sync.Mutex
	cmd  *exec.Cmd
	logs *syncWriter
	done chan struct{}
}

// Binary returns the Vault binary's path. Without it the test fails with
// a message saying to run `make vault`; with -short it is skipped.
func Binary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv(EnvBinary)
	if bin == "" {
		if testing.Short() {
			t.Skipf("%s not set: skipping the Vault integration test in -short mode", EnvBinary)
		}
		t.Fatalf("%s is not set: run `make vault` (or `make test`, which builds it) to build the Vault dev server", EnvBinary)
	}
	if _, err := os.Stat(bin); err != nil { //nolint:gosec // G703: the test runner names the binary to run; no untrusted input
		t.Fatalf("%s=%s: %v: run `make vault` to build the Vault dev server", EnvBinary, bin, err)
	}
	return bin
}

// Start starts a Vault dev server and waits until it is unsealed and
// active. It is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("vaulttest: free port: %v", err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	if err := l.Close(); err != nil {
		t.Fatalf("vaulttest: free port: %v", err)
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	s := &Server{
		Addr:  "http://127.0.0.1:" + port,
		Token: "root-" + hex.EncodeToString(tok),
		t:     t,
		bin:   bin,
		port:  port,
	}
	t.Cleanup(s.Stop)
	s.start()
	return s
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(s.bin, "server", "-dev", //nolint:gosec // G204: s.bin is the Vault binary the test runner chose (MESHWARD_VAULT_BIN)
		"-dev-root-token-id="+s.Token,
		"-dev-listen-address=127.0.0.1:"+s.port,
		"-dev-no-store-token",
		"-log-level=warn")
	cmd.Env = append(os.Environ(), "VAULT_DISABLE_MLOCK=true", "HOME="+s.t.TempDir(), "VAULT_ADDR=", "VAULT_TOKEN=")
	logs := &syncWriter{}
	cmd.Stdout = logs
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("vaulttest: start %s: %v", s.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.logs, s.done = cmd, logs, done
	if err := waitHealthy(s.Addr, done, 60*time.Second); err != nil {
		_ = cmd.Process.Kill()
		<-done
		s.t.Fatalf("vaulttest: %v\nvault output:\n%s", err, logs.String())
	}
}

func waitHealthy(addr string, done <-chan struct{}, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, addr+"/v1/sys/health", nil)
		resp, err := c.Do(req)
		if err == nil {
			_ = resp.Body.Close() // only the status is read
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		select {
		case <-done:
			return fmt.Errorf("vault exited before it was healthy")
		case <-ctx.Done():
			return fmt.Errorf("vault not healthy at %s after %v (last error: %w)", addr, timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops the server (idempotent). Its state is lost: a dev server
// keeps everything in memory.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Restart starts a fresh dev server on the same address with the same root
// token (an empty Vault: mounts must be set up again).
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Client returns a vault/api client logged in with the root token.
func (s *Server) Client() *vault.Client {
	s.t.Helper()
	cfg := vault.DefaultConfig()
	cfg.Address = s.Addr
	c, err := vault.NewClient(cfg)
	if err != nil {
		s.t.Fatalf("vaulttest: client: %v", err)
	}
	c.SetToken(s.Token)
	return c
}

// Logs returns what the server printed so far.
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logs == nil {
		return ""
	}
	return s.logs.String()
}

type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
