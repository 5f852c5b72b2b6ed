package extauthz

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rssChildEnv selects, in the child process of BenchmarkHeaderAbuseRSS,
// which limits the server runs with.
const rssChildEnv = "MESHWARD_RSS_CHILD"

// Limits of the child server: meshward's defaults, or grpc-go's (16 MiB
// header lists, unlimited streams and connections: what the server had
// before it set its own).
const (
	rssLimitsDefault = "default"
	rssLimitsGRPC    = "grpc-go-defaults"
)

// TestRSSServerChild is the server process of BenchmarkHeaderAbuseRSS: it
// serves ext_authz in plaintext, prints its address and runs until its
// stdin closes. It is skipped unless started by the benchmark.
func TestRSSServerChild(t *testing.T) {
	mode := os.Getenv(rssChildEnv)
	if mode == "" {
		t.Skip("the server process of BenchmarkHeaderAbuseRSS")
	}
	cfg := plainConfig()
	if mode == rssLimitsGRPC {
		cfg.MaxHeaderListBytes = MaxHeaderListBytesLimit
		cfg.MaxConcurrentStreams = math.MaxUint32
		cfg.MaxConnections = 1 << 30
	}
	s := newServer(t, cfg, &countingDecider{}, Options{})
	addr := startServer(t, s)
	fmt.Printf("ADDR %s\n", addr)
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// BenchmarkHeaderAbuseRSS measures the server's peak RSS (VmHWM) while
// 20 clients each send a Check carrying 15 MiB of gRPC metadata, as raw
// HTTP/2 clients that ignore the announced header list limit. The server
// runs in a child process so that its RSS is its own. Reported:
// baseline-MiB (RSS after one normal Check), peak-MiB, above-baseline-MiB
// (target: under 256), and refused (requests not answered). Run with
// -benchtime=1x; limits=grpc-go-defaults shows what the server did before
// it had limits.
func BenchmarkHeaderAbuseRSS(b *testing.B) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		b.Skip("needs /proc for the child's RSS")
	}
	for _, mode := range []string{rssLimitsDefault, rssLimitsGRPC} {
		b.Run("limits="+mode, func(b *testing.B) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestRSSServerChild$")
			cmd.Env = append(os.Environ(), rssChildEnv+"="+mode)
			cmd.Stderr = os.Stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				b.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() {
				stdin.Close()
				_ = cmd.Wait()
			}()
			addr := ""
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
					addr = a
					break
				}
			}
			if addr == "" {
				b.Fatal("the child server printed no address")
			}
			go func() { _, _ = io.Copy(io.Discard, stdout) }()

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			// Baseline: the server after one normal Check.
			h, err := dialH2(addr)
			if err != nil {
				b.Fatal(err)
			}
			if out, err := h.check(ctx, 0); err != nil || out.grpcStatus != "0" {
				b.Fatalf("normal Check: %+v, %v", out, err)
			}
			base := procStatusKiB(b, cmd.Process.Pid, "VmRSS")

			const clients, metadataBytes = 20, 15 << 20
			refused := 0
			for b.Loop() {
				var wg sync.WaitGroup
				var mu sync.Mutex
				for range clients {
					wg.Go(func() {
						h, err := dialH2(addr)
						if err != nil {
							b.Error(err)
							return
						}
						out, err := h.check(ctx, metadataBytes)
						if err != nil {
							b.Error(err)
							return
						}
						if out.grpcStatus == "" {
							mu.Lock()
							refused++
							mu.Unlock()
						}
					})
				}
				wg.Wait()
			}
			peak := procStatusKiB(b, cmd.Process.Pid, "VmHWM")
			b.ReportMetric(base/1024, "baseline-MiB")
			b.ReportMetric(peak/1024, "peak-MiB")
			b.ReportMetric((peak-base)/1024, "above-baseline-MiB")
			b.ReportMetric(float64(refused)/float64(b.N), "refused")
		})
	}
}

// procStatusKiB reads a kB field of /proc/PID/status.
func procStatusKiB(b *testing.B, pid int, field string) float64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
