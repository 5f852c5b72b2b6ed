package admin

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshward/meshward/cmd/meshward/internal/ui"
)

// TestStatusPageOnAdminServer: the status page mounted on the admin
// server is served over its listener beside /metrics, with its CSP, and
// does not shadow the admin routes.
func TestStatusPageOnAdminServer(t *testing.T) {
	s := New("127.0.0.1:0", prometheus.NewRegistry(), map[string]Checker{}, slog.New(slog.DiscardHandler))
	ui.Register(s, ui.Sources{})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
	tests := []struct {
		path, want string
		csp        bool
	}{
		{"/ui/", "<title>meshward status</title>", true},
		{"/ui", "<title>meshward status</title>", true}, // redirected
		{"/ui/api/nodes", `"enabled":false`, true},
		{"/healthz", "alive", false},
	}
	for _, tc := range tests {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Addr().String()+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), tc.want) {
			t.Errorf("GET %s: %d %.100s, want 200 with %q", tc.path, resp.StatusCode, body, tc.want)
		}
		if got := resp.Header.Get("Content-Security-Policy") != ""; got != tc.csp {
			t.Errorf("GET %s: CSP set %v, want %v", tc.path, got, tc.csp)
		}
	}
}
