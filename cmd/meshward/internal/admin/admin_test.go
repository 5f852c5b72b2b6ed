package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServer(t *testing.T) {
	var xdsReady atomic.Bool
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	s := New("127.0.0.1:0", reg, map[string]Checker{
		"authz": CheckerFunc(func() error { return nil }),
		"xds": CheckerFunc(func() error {
			if xdsReady.Load() {
				return nil
			}
			return errors.New("no snapshot yet")
		}),
	}, slog.New(slog.DiscardHandler))
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
	base := "http://" + s.Addr().String()
	get := func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
	code, body := get("/readyz")
	if code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with xds not ready = %d, want 503", code)
	}
	var nr struct {
		NotReady map[string]string `json:"notReady"`
	}
	if err := json.Unmarshal([]byte(body), &nr); err != nil || nr.NotReady["xds"] != "no snapshot yet" || len(nr.NotReady) != 1 {
		t.Errorf("/readyz body = %s, want it to name only xds and why", body)
	}
	xdsReady.Store(true)
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz all ready = %d %s, want 200", code, body)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics = %d, want 200 with Go collector metrics", code)
	}
	if code, _ := get("/nope"); code != http.StatusNotFound {
		t.Errorf("/nope = %d, want 404", code)
	}
}

// The admin server has no authentication: a wildcard address is served
// but warned about, a specific one is not.
func TestWildcardAddressWarns(t *testing.T) {
	for _, tc := range []struct {
		addr string
		warn bool
	}{
		{"127.0.0.1:0", false},
		{"[::1]:0", false},
		{"0.0.0.0:0", true},
		{":0", true},
		{"[::]:0", true},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			if got := Wildcard(tc.addr); got != tc.warn {
				t.Errorf("Wildcard(%q) = %v, want %v", tc.addr, got, tc.warn)
			}
			var logs strings.Builder
			s := New(tc.addr, prometheus.NewRegistry(), nil, slog.New(slog.NewTextHandler(&logs, nil)))
			if err := s.Listen(); err != nil {
				if strings.Contains(tc.addr, "::") {
					t.Skipf("no IPv6 here: %v", err)
				}
				t.Fatal(err)
			}
			(*s.listener.Load()).Close()
			if got := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "no authentication"); got != tc.warn {
				t.Errorf("warned = %v, want %v; log:\n%s", got, tc.warn, logs.String())
			}
		})
	}
}
