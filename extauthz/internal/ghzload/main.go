// Command ghzload measures meshward's ext_authz service the way a user
// would: ghz (c=8, one connection) sends the reference allow request to
// `meshward serve` running in its own process, and, in the same run and
// alternating with it round by round, to a no-op Authorization server
// (answers OK, does nothing; gRPC reflection on, like the quickstart) in
// a process of its own. A last variant sends examples/mcp's allowed
// tools/call (argument validation included) to that example's
// configuration instead. It prints each variant's median throughput ratio
// to the no-op, and CPU per Check of both servers. `make bench` runs it (see docs/performance.md).
//
//	go run ./extauthz/internal/ghzload -meshward bin/meshward -ghz .cache/bin/ghz-v0.93.0
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	"github.com/meshward/meshward/examples/quickstart"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ghzload:", err)
		os.Exit(1)
	}
}

type noop struct {
	authv3.UnimplementedAuthorizationServer
}

func (noop) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &status.Status{}}, nil
}

// variant is one meshward configuration: the quickstart's (or, with
// example set, examples/<example>/meshward.yaml deciding that example's
// request), with its audit section replaced.
type variant struct {
	name  string
	audit string // YAML of the audit section; "" for none
	// example and request: an examples/ folder and the request under its
	// requests/ sent instead of the quickstart's allow.json.
	example, request string
}

func run() error {
	meshward := flag.String("meshward", "bin/meshward", "meshward binary")
	ghz := flag.String("ghz", "ghz", "ghz binary (v0.93.0)")
	n := flag.Int("n", 20000, "Checks per server per round")
	c := flag.Int("c", 8, "concurrent Checks (ghz -c)")
	rounds := flag.Int("rounds", 5, "rounds per variant, alternating which server goes first")
	only := flag.String("only", "", "run only the variants whose name contains this")
	noopListen := flag.String("noop", "", "internal: serve the no-op server on this address and block")
	flag.Parse()
	if *noopListen != "" {
		return serveNoop(*noopListen)
	}

	dir, err := os.MkdirTemp("", "ghzload-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if err := os.CopyFS(filepath.Join(dir, "quickstart"), quickstart.Files); err != nil {
		return err
	}
	if err := os.CopyFS(filepath.Join(dir, "mcp"), os.DirFS("examples/mcp")); err != nil {
		return fmt.Errorf("run from the repository's root: %w", err)
	}
	req, err := fs.ReadFile(os.DirFS("."), "examples/quickstart/requests/allow.json")
	if err != nil {
		return fmt.Errorf("run from the repository's root: %w", err)
	}
	reqFile := filepath.Join(dir, "allow.json")
	if err := os.WriteFile(reqFile, req, 0o600); err != nil {
		return err
	}

	// The no-op server, in a process of its own like meshward's.
	noopAddr, err := freePort()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	noopCmd := exec.Command(self, "-noop", noopAddr) //nolint:gosec // G204: this program itself
	if err := noopCmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = noopCmd.Process.Kill()
		_ = noopCmd.Wait()
	}()
	if err := waitListening(noopAddr, 10*time.Second); err != nil {
		return err
	}
	noopProc := noopCmd.Process.Pid

	// Seal and encryption keys for the chained, encrypted file sink.
	sealKey, encKey := filepath.Join(dir, "seal.key"), filepath.Join(dir, "enc.key")
	if err := os.WriteFile(sealKey, []byte("ghzload-seal-key-0123456789"), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(encKey, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		return err
	}
	variants := []variant{
		{name: "rules+schema, audit=file", audit: "audit:\n  sinks:\n    - type: file\n      path: " + filepath.Join(dir, "audit.log") + "\n"},
		{name: "rules+schema, audit=file sealed+encrypted", audit: "audit:\n  seal: {keyFile: " + sealKey + "}\n  encryption: {keyFile: " + encKey + "}\n" +
			"  sinks:\n    - type: file\n      path: " + filepath.Join(dir, "audit-enc.log") + "\n"},
		{name: "rules+schema, audit off"},
		{name: "mcp tools/call+arguments, audit off", example: "mcp", request: "allow_search.json"},
	}
	fmt.Printf("ghz v0.93.0 -c %d --connections 1 -n %d, %d rounds, reference allow request; ratio = meshward rps / no-op rps\n", *c, *n, *rounds)
	for _, v := range variants {
		if *only != "" && !strings.Contains(v.name, *only) {
			continue
		}
		vreq := reqFile
		if v.request != "" {
			vreq = filepath.Join(dir, v.example, "requests", v.request)
		}
		if err := runVariant(dir, *meshward, *ghz, vreq, noopAddr, noopProc, v, *n, *c, *rounds); err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
	}
	return nil
}

func serveNoop(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	g := grpc.NewServer()
	authv3.RegisterAuthorizationServer(g, noop{})
	reflection.Register(g)
	return g.Serve(lis)
}

func runVariant(dir, meshward, ghz, reqFile, noopAddr string, noopPid int, v variant, n, c, rounds int) error {
	folder := "quickstart"
	if v.example != "" {
		folder = v.example
	}
	cfg, err := os.ReadFile(filepath.Join(dir, folder, "meshward.yaml"))
	if err != nil {
		return err
	}
	text, _, _ := strings.Cut(string(cfg), "\naudit:\n")
	port, err := freePort()
	if err != nil {
		return err
	}
	text = strings.Replace(text, "address: 127.0.0.1:9191", "address: "+port, 1)
	if !strings.Contains(text, "reflection: true") {
		// ghz finds the service by reflection, as on the quickstart.
		text = strings.Replace(text, "  plaintext: true\n", "  plaintext: true\n  reflection: true\n", 1)
	}
	// Admin and xDS on free ports too, so a running `make run` does not clash.
	for _, old := range []string{"address: 127.0.0.1:9090", "address: 127.0.0.1:18000"} {
		p, err := freePort()
		if err != nil {
			return err
		}
		text = strings.Replace(text, old, "address: "+p, 1)
	}
	text += "\n" + v.audit
	cfgFile := filepath.Join(dir, folder, "bench.yaml")
	if err := os.WriteFile(cfgFile, []byte(text), 0o600); err != nil { //nolint:gosec // G703: a file in this run's temporary folder
		return err
	}
	cmd := exec.Command(meshward, "serve", "--config", cfgFile, "--log-format", "text") //nolint:gosec // G204: the binary the user names is what is measured
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	if err := waitListening(port, 20*time.Second); err != nil {
		return err
	}
	// Warm both up.
	for _, addr := range []string{port, noopAddr} {
		if _, err := ghzRun(ghz, addr, reqFile, n/10, c); err != nil {
			return err
		}
	}
	pids := map[string]int{port: cmd.Process.Pid, noopAddr: noopPid}
	var ratios, cpuRatios []float64
	for r := range rounds {
		order := []string{port, noopAddr}
		if r%2 == 1 {
			order = []string{noopAddr, port}
		}
		rps, cpu := map[string]float64{}, map[string]float64{}
		for _, addr := range order {
			before := procCPU(pids[addr])
			res, err := ghzRun(ghz, addr, reqFile, n, c)
			if err != nil {
				return err
			}
			if res.errors > 0 {
				return fmt.Errorf("%d of %d Checks failed against %s", res.errors, n, addr)
			}
			cpu[addr] = (procCPU(pids[addr]) - before).Seconds() / float64(n) * 1e6
			rps[addr] = res.rps
		}
		ratios = append(ratios, rps[port]/rps[noopAddr])
		cpuRatios = append(cpuRatios, cpu[port]/cpu[noopAddr])
		fmt.Printf("  %-26s round %d: meshward %6.0f rps %5.1f µs CPU/Check, no-op %6.0f rps %5.1f µs, ratio %.2f\n",
			v.name, r+1, rps[port], cpu[port], rps[noopAddr], cpu[noopAddr], ratios[len(ratios)-1])
	}
	fmt.Printf("%-28s median ratio %.2f (range %.2f-%.2f), CPU per Check %.2fx the no-op's\n",
		v.name, median(ratios), slices.Min(ratios), slices.Max(ratios), median(cpuRatios))
	return nil
}

type ghzResult struct {
	rps    float64
	errors int
}

func ghzRun(ghz, addr, reqFile string, n, c int) (ghzResult, error) {
	out, err := exec.Command(ghz, "--insecure", "--call", "envoy.service.auth.v3.Authorization/Check", //nolint:gosec // G204: the load tool the user names
		"-D", reqFile, "-n", strconv.Itoa(n), "-c", strconv.Itoa(c), "--connections", "1",
		"--format", "json", addr).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ghzResult{}, fmt.Errorf("ghz: %w: %s", err, ee.Stderr)
		}
		return ghzResult{}, fmt.Errorf("ghz: %w", err)
	}
	var rep struct {
		RPS            float64        `json:"rps"`
		StatusCodeDist map[string]int `json:"statusCodeDistribution"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return ghzResult{}, fmt.Errorf("ghz output: %w", err)
	}
	res := ghzResult{rps: rep.RPS}
	for code, k := range rep.StatusCodeDist {
		if code != "OK" {
			res.errors += k
		}
	}
	return res, nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

func waitListening(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("meshward did not listen on %s within %v", addr, d)
}

// procCPU is the user+system CPU time of process pid (Linux /proc).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clkTck
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
