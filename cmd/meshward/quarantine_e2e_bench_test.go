package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshward/meshward/cmd/meshward/internal/envoysim"
)

// Scale of BenchmarkQuarantineEndToEnd.
const (
	envBenchQuarantineNodes = "MESHWARD_BENCH_QUARANTINE_NODES" // default 5000
	// envBenchPprof, when set, is the address the serve child serves
	// net/http/pprof on (test binary only), to profile it under the
	// benchmark.
	envBenchPprof = "MESHWARD_TEST_PPROF"
)

// quarantineBenchToken is the admin API's bearer token in the benchmark.
const quarantineBenchToken = "bench-token"

// quarantineMesh is one serve process (this test binary re-executed, so
// that its CPU is not the measuring goroutines') serving a ring of n
// agents from a file (each calls the next three), with a quarantine state
// file and the admin API on, and one simulated Envoy per agent.
type quarantineMesh struct {
	n      int
	config string
	child  *serveChild
	admin  string
	fleet  *envoysim.Fleet
	ac     authv3.AuthorizationClient
	check  *authv3.CheckRequest // allow.json, the principals set per Check
	setup  time.Duration        // serve started -> every Envoy holds every type
}

// quarantineMeshConfig writes the quickstart (testConfig: every
// listener on a free port) with its agents replaced by syntheticMesh's
// ring of n (a0 ... a(n-1), each with the next three as peers), the
// quarantine state file state/quarantine.json and the admin API's token
// file; it returns the configuration's path.
func quarantineMeshConfig(b *testing.B, n int) string {
	b.Helper()
	p := testConfig(b)
	qs, err := os.ReadFile(p)
	if err != nil {
		b.Fatal(err)
	}
	// Port 0: the Envoys are told where ext_authz is.
	s := strings.Replace(string(qs), "  insecure: true\n", "  insecure: true\n  authzAddress: meshward.internal:9191\n", 1)
	head, _, ok1 := strings.Cut(s, "\nagents:\n")
	_, tail, ok2 := strings.Cut(s, "\nsecrets:\n")
	if !ok1 || !ok2 {
		b.Fatal("test setup: the quickstart has no agents: or secrets: section")
	}
	// The agents as an operator writes them (only the fields set): the
	// CLI's time includes reading them.
	var sb strings.Builder
	sb.WriteString(head + "\nagents:\n")
	for _, a := range syntheticMesh(b, n).Agents {
		fmt.Fprintf(&sb, "  - name: %s\n    spiffeID: %s\n    host: %s\n    inboundPort: %d\n    outboundPort: %d\n    app: %s\n    peers:\n",
			a.Name, a.SPIFFEID, a.Host, a.InboundPort, a.OutboundPort, a.App)
		for _, p := range a.Peers {
			fmt.Fprintf(&sb, "      - name: %s\n        addresses: [%s]\n", p.Name, strings.Join(p.Addresses, ", "))
		}
	}
	sb.WriteString("\nquarantine:\n  file: state/quarantine.json\n  api:\n    tokenFile: token.txt\n\nsecrets:\n" + tail)
	s = sb.String()
	if err := os.WriteFile(filepath.Join(filepath.Dir(p), "token.txt"), []byte(quarantineBenchToken+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}

func startQuarantineMesh(b *testing.B, ctx context.Context, n int) *quarantineMesh {
	b.Helper()
	m := &quarantineMesh{n: n, config: quarantineMeshConfig(b, n), check: refRequest(b, "allow.json")}
	t0 := time.Now()
	m.child = serveProcess(b, "--config", m.config)
	xdsAddr := m.child.lw.waitForWithin(b, 5*time.Minute, "xds serving", "address")
	m.admin = m.child.lw.waitFor(b, "admin server listening", "address")
	conn, err := grpc.NewClient(m.child.lw.waitFor(b, "ext_authz server listening", "address"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	m.ac = authv3.NewAuthorizationClient(conn)
	nodes := make([]string, n)
	for i := range n {
		nodes[i] = fmt.Sprintf("a%d", i)
	}
	m.fleet = envoysim.Start(ctx, xdsAddr, nodes)
	b.Cleanup(m.fleet.Stop)
	// A few minutes at most at 5,000 (setup is seconds); on failure, what
	// serve logged as wrong says why.
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer wcancel()
	if err := m.fleet.Wait(wctx, m.fleet.Envoys, (*envoysim.Envoy).Has); err != nil {
		m.child.lw.mu.Lock()
		for _, l := range m.child.lw.lines[:min(len(m.child.lw.lines), 200)] {
			if l["level"] == "ERROR" || l["level"] == "WARN" {
				b.Logf("serve: %v", l)
			}
		}
		m.child.lw.mu.Unlock()
		b.Fatal(err)
	}
	m.setup = time.Since(t0)
	return m
}

func (m *quarantineMesh) id(i int) string {
	return fmt.Sprintf("spiffe://mesh.local/ns/default/sa/a%d", i)
}

// callers are the agents with a peers entry naming agent k.
func (m *quarantineMesh) callers(k int) []*envoysim.Envoy {
	return []*envoysim.Envoy{m.fleet.Envoys[(k+m.n-1)%m.n], m.fleet.Envoys[(k+m.n-2)%m.n], m.fleet.Envoys[(k+m.n-3)%m.n]}
}

// quarantined sends a Check from src to dst and reports whether it was
// denied with reason quarantined.
func (m *quarantineMesh) quarantined(b *testing.B, ctx context.Context, src, dst int) bool {
	req := m.check
	req.Attributes.Source.Principal, req.Attributes.Destination.Principal = m.id(src), m.id(dst)
	code, body := checkStatus(b, ctx, m.ac, req)
	return code == http.StatusForbidden && strings.Contains(body, `"error":"quarantined"`)
}

// quarantineCommand is the one step an operator takes: op is quarantine
// or release, agent the agent's name.
type quarantineCommand struct {
	name string
	run  func(b *testing.B, ctx context.Context, m *quarantineMesh, op, agent string)
}

var quarantineCommands = []quarantineCommand{
	// `meshward quarantine --config FILE AGENT` as its own process (this
	// test binary re-executed as meshward): it loads and validates the
	// 5,000-agent configuration, then edits the state file.
	{"cli", func(b *testing.B, ctx context.Context, m *quarantineMesh, op, agent string) {
		exe, err := os.Executable()
		if err != nil {
			b.Fatal(err)
		}
		args := []string{op, "--config", m.config, agent}
		if op == "quarantine" {
			args = append(args, "--reason", "benchmark")
		}
		cmd := exec.CommandContext(ctx, exe, args...) //nolint:gosec // G204: this very test binary
		cmd.Env = append(os.Environ(), envRunMain+"=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("meshward %s %s: %v\n%s", op, agent, err, out)
		}
	}},
	// POST /admin/quarantine (or /admin/release) to the serve process.
	{"admin-api", func(b *testing.B, ctx context.Context, m *quarantineMesh, op, agent string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+m.admin+"/admin/"+op,
			strings.NewReader(`{"identity":"`+agent+`","reason":"benchmark"}`))
		req.Header.Set("Authorization", "Bearer "+quarantineBenchToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("POST /admin/%s %s: %d %s", op, agent, resp.StatusCode, body)
		}
	}},
}

// BenchmarkQuarantineEndToEnd: a ring of 5,000 agents (each calls the
// next three) served from a file by one serve process, 5,000 simulated
// Envoys connected over delta ADS, and a Check client. Each iteration
// quarantines one agent with the command (the CLI as its own process, or
// the admin API) and measures from the command's start until all of:
// a Check from it and a Check to it are denied 403 quarantined; each of
// the three Envoys with a cluster to it has ACKed clusters without it;
// its own Envoy's stream is ended (its configuration withdrawn). That is
// the figure (p50/p99 over the iterations); then it releases the agent
// and waits until all that is undone (p50 of the release reported too).
// Run with `make bench-quarantine`; MESHWARD_BENCH_QUARANTINE_NODES sets
// the scale.
func BenchmarkQuarantineEndToEnd(b *testing.B) {
	if os.Getenv(envBenchQuarantineNodes) == "" {
		// Tens of seconds of setup at 5,000 nodes: not part of `make bench`.
		b.Skipf("%s is not set: run `make bench-quarantine` (NODES=5000 by default)", envBenchQuarantineNodes)
	}
	n := envInt(b, envBenchQuarantineNodes, 5000)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	m := startQuarantineMesh(b, ctx, n)
	b.Logf("%d agents, %d Envoys: serve started and every Envoy holding clusters, listeners, routes and secrets in %s; serve RSS %s",
		n, len(m.fleet.Envoys), m.setup.Round(time.Millisecond), mibOf(m.child.rss()))
	round := 0
	for _, c := range quarantineCommands {
		b.Run(c.name, func(b *testing.B) {
			var total, denied, peers, withdrawn, released []time.Duration
			unaffected := 0
			for b.Loop() {
				k := (round*7919 + 11) % n // spread over the ring
				round++
				agent, cluster := fmt.Sprintf("a%d", k), fmt.Sprintf("peer-a%d", k)
				callers, victim := m.callers(k), m.fleet.Envoys[k]
				for _, e := range callers {
					if _, ok := e.Versions(resourcev3.ClusterType)[cluster]; !ok {
						b.Fatalf("test setup: %s has no cluster %s", e.Node, cluster)
					}
				}
				before := make([]int, n)
				for i, e := range m.fleet.Envoys {
					before[i] = e.Responses()
				}

				t0 := time.Now()
				c.run(b, ctx, m, "quarantine", agent)
				// (a) a Check from it and one to it denied as quarantined.
				var fromAt, toAt time.Time
				for fromAt.IsZero() || toAt.IsZero() {
					if fromAt.IsZero() && m.quarantined(b, ctx, k, (k+1)%n) {
						fromAt = time.Now()
					}
					if toAt.IsZero() && m.quarantined(b, ctx, (k+n-1)%n, k) {
						toAt = time.Now()
					}
					if ctx.Err() != nil {
						b.Fatal("Checks never denied as quarantined")
					}
				}
				// (b) every caller's Envoy ACKed clusters without it.
				if err := m.fleet.Wait(ctx, callers, func(e *envoysim.Envoy) bool {
					_, has := e.Versions(resourcev3.ClusterType)[cluster]
					return !has && e.AckedAt(resourcev3.ClusterType).After(t0)
				}); err != nil {
					b.Fatal(err)
				}
				// (c) its own Envoy's stream ended.
				if err := m.fleet.Wait(ctx, []*envoysim.Envoy{victim}, func(e *envoysim.Envoy) bool {
					_, ok := e.EndedAfter(t0)
					return ok
				}); err != nil {
					b.Fatal(err)
				}
				last := max(fromAt.Sub(t0), toAt.Sub(t0))
				denied = append(denied, last)
				var peersLast time.Duration
				for _, e := range callers {
					peersLast = max(peersLast, e.AckedAt(resourcev3.ClusterType).Sub(t0))
				}
				peers = append(peers, peersLast)
				end, _ := victim.EndedAfter(t0)
				withdrawn = append(withdrawn, end.Sub(t0))
				total = append(total, max(last, peersLast, end.Sub(t0)))
				for i, e := range m.fleet.Envoys {
					if i != k && !slices.Contains(callers, e) {
						unaffected += e.Responses() - before[i]
					}
				}

				// Release, and wait until it is all undone: Checks not
				// denied as quarantined, the callers' clusters back, its
				// Envoy holding every type on a stream that stays open.
				t1 := time.Now()
				c.run(b, ctx, m, "release", agent)
				for m.quarantined(b, ctx, k, (k+1)%n) || m.quarantined(b, ctx, (k+n-1)%n, k) {
					if ctx.Err() != nil {
						b.Fatal("Checks still denied as quarantined after the release")
					}
				}
				if err := m.fleet.Wait(ctx, callers, func(e *envoysim.Envoy) bool {
					_, has := e.Versions(resourcev3.ClusterType)[cluster]
					return has && e.AckedAt(resourcev3.ClusterType).After(t1)
				}); err != nil {
					b.Fatal(err)
				}
				if err := m.fleet.Wait(ctx, []*envoysim.Envoy{victim}, func(e *envoysim.Envoy) bool {
					return e.Has() && e.AckedAt(resourcev3.SecretType).After(t1)
				}); err != nil {
					b.Fatal(err)
				}
				released = append(released, time.Since(t1))
			}
			b.StopTimer()
			for _, s := range [][]time.Duration{total, denied, peers, withdrawn, released} {
				slices.Sort(s)
			}
			b.ReportMetric(pctOf(total, 50).Seconds(), "p50-s")
			b.ReportMetric(pctOf(total, 99).Seconds(), "p99-s")
			b.ReportMetric(pctOf(denied, 50).Seconds(), "p50-denied-s")
			b.ReportMetric(pctOf(peers, 50).Seconds(), "p50-peers-acked-s")
			b.ReportMetric(pctOf(withdrawn, 50).Seconds(), "p50-withdrawn-s")
			b.ReportMetric(pctOf(released, 50).Seconds(), "p50-release-s")
			b.ReportMetric(float64(unaffected)/float64(len(total)), "unaffected-responses/op")
			b.Logf("%s, %d quarantines of %d agents: command -> all done p50 %s p99 %s max %s; Checks denied p50 %s, the 3 callers' Envoys ACKed p50 %s, its own Envoy's stream ended p50 %s; release undone p50 %s; serve RSS %s",
				c.name, len(total), n, pctOf(total, 50).Round(time.Millisecond), pctOf(total, 99).Round(time.Millisecond), total[len(total)-1].Round(time.Millisecond),
				pctOf(denied, 50).Round(time.Millisecond), pctOf(peers, 50).Round(time.Millisecond), pctOf(withdrawn, 50).Round(time.Millisecond),
				pctOf(released, 50).Round(time.Millisecond), mibOf(m.child.rss()))
		})
	}
}
