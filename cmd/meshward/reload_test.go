package main

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// msgs are the messages of every log line lw has seen, in order.
func (lw *logWatcher) msgs() []string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	out := make([]string, 0, len(lw.lines))
	for _, l := range lw.lines {
		m, _ := l["msg"].(string)
		out = append(out, m)
	}
	return out
}

// waitCount waits until msg has been logged n times and returns the log.
func (lw *logWatcher) waitCount(t *testing.T, msg string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ms := lw.msgs()
		if count(ms, msg) >= n {
			return ms
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%q not logged %d times within 20s:\n%s", msg, n, strings.Join(lw.msgs(), "\n"))
	return nil
}

func count(ms []string, msg string) int {
	n := 0
	for _, m := range ms {
		if m == msg {
			n++
		}
	}
	return n
}

// TestServeReloadLogsEachChangeOnce: with both components, one change of
// the configuration file is logged once and reloaded by one watcher, the
// policy first and then the agents; a change the agents do not see
// reloads the policy only.
func TestServeReloadLogsEachChangeOnce(t *testing.T) {
	path := testConfig(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lw, wait := serveInProcess(t, ctx, io.Discard, "--config", path)
	defer func() {
		cancel()
		wait()
	}()
	lw.waitFor(t, "meshward serving", "")
	time.Sleep(100 * time.Millisecond) // the watcher starts with the tasks

	const (
		trigger = "reloading policy after a file change"
		policy  = "policy revision loaded"
		agents  = "xds: agents reloaded"
	)
	// A rule and an agent change together.
	changed := strings.Replace(strings.Replace(string(orig),
		"anyRole: [admin, operator, viewer]", "anyRole: [admin, operator]", 1),
		"app: 127.0.0.1:8083", "app: 127.0.0.1:8093", 1)
	if changed == string(orig) {
		t.Fatal("test setup: could not edit the quickstart")
	}
	if err := os.WriteFile(path, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	lw.waitCount(t, agents, 1)
	time.Sleep(500 * time.Millisecond) // a second watcher would log by now
	ms := lw.msgs()
	if n := count(ms, trigger); n != 1 {
		t.Errorf("%q logged %d times for one change, want 1:\n%s", trigger, n, strings.Join(ms, "\n"))
	}
	last := func(msg string) int {
		for i := len(ms) - 1; i >= 0; i-- {
			if ms[i] == msg {
				return i
			}
		}
		return -1
	}
	if tr, p, a := last(trigger), last(policy), last(agents); !(tr < p && p < a) {
		t.Errorf("order: trigger at %d, policy at %d, agents at %d; want trigger, policy, agents:\n%s", tr, p, a, strings.Join(ms, "\n"))
	}

	// Only a rule changes: the agents are not reloaded (nor logged).
	if err := os.WriteFile(path, []byte(strings.Replace(changed, "anyRole: [admin, operator]\n", "anyRole: [admin, operator, viewer]\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	lw.waitCount(t, trigger, 2)
	ms = lw.waitCount(t, policy, 3)
	time.Sleep(500 * time.Millisecond)
	ms = lw.msgs()
	if n := count(ms, agents); n != 1 {
		t.Errorf("%q logged %d times, want 1: the second change left the agents alone:\n%s", agents, n, strings.Join(ms, "\n"))
	}
}
