package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMetricsDocumented serves the quickstart and checks that every
// meshward_ metric /metrics exposes is documented in docs/metrics.md.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lw, wait := serveInProcess(t, ctx, io.Discard, "--config", testConfig(t))
	admin := lw.waitFor(t, "admin server listening", "address")
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	waitReady(t, rctx, admin)

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cancel()
	wait()

	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (meshward_\w+) `).FindAllSubmatch(body, -1) {
		names[string(m[1])] = true
	}
	for _, want := range []string{"meshward_policy_reloads_total", "meshward_xds_connected_proxies", "meshward_audit_queue_depth", "meshward_secrets_issuance_total"} {
		if !names[want] {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !bytes.Contains(body, []byte("go_goroutines")) || !bytes.Contains(body, []byte("process_")) {
		t.Error("/metrics lacks the Go and process collectors")
	}
	for n := range names {
		if !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("metric %s is not documented in docs/metrics.md", n)
		}
	}
}
