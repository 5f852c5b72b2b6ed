// Command loadtest measures the xDS server under many nodes: it starts one
// in-process xds.Server fed by the fake mesh (2 listeners, 2 routes, 3
// clusters, 3 secrets per node, one a ~1 KB certificate chain), connects N
// simulated Envoys that speak delta ADS and ACK everything, and reports
//
//   - the time until all N have ACKed clusters, listeners, routes and secrets,
//   - the resident memory (VmRSS) of the server process and, separately, of
//     the client process,
//   - after one config change to every node (a listener), and then after
//     one certificate rotation of every node, the time until each node
//     ACKed it (p50, p99, max), measured from the change to the server's
//     receipt of the ACK.
//
// The simulated Envoys run in a child process (this binary re-executed
// with -role=clients, one gRPC connection per node) so that the server's
// RSS is the server's alone (-inproc runs them in-process). xDS is
// plaintext by default so that the figures measure the xDS server rather
// than N TLS handshakes on 2 cores; -mtls gives every node its own client
// certificate from a throwaway CA and serves over mutual TLS.
//
//	go run ./xds/internal/loadtest -n 5000
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshward/meshward/xds"
	"github.com/meshward/meshward/xds/internal/xdsclient"
	"github.com/meshward/meshward/xds/internal/xdstest"
)

const trustDomain = "load.test"

type flags struct {
	role    string
	addr    string
	n       int
	mtls    bool
	timeout time.Duration
	dialPar int
	cpuProf string
	inproc  bool
	caFile  string
}

func main() {
	var f flags
	flag.StringVar(&f.role, "role", "server", "server (measure) or clients (internal: the simulated Envoys)")
	flag.StringVar(&f.addr, "addr", "", "xDS address (clients role)")
	flag.IntVar(&f.n, "n", 1000, "number of simulated nodes")
	flag.BoolVar(&f.mtls, "mtls", false, "serve xDS over mutual TLS (each node with its own client certificate)")
	flag.BoolVar(&f.inproc, "inproc", false, "run the simulated Envoys in this process (RSS then includes them)")
	flag.StringVar(&f.caFile, "ca-file", "", "CA certificate and key (clients role, internal)")
	flag.DurationVar(&f.timeout, "timeout", 5*time.Minute, "give up after this long")
	flag.IntVar(&f.dialPar, "dial-parallelism", 256, "streams being opened at once")
	flag.StringVar(&f.cpuProf, "cpuprofile", "", "write the server process's CPU profile of the change phase here")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var err error
	if f.role == "clients" {
		var ca *xdstest.CA
		if f.caFile != "" {
			data, rerr := os.ReadFile(f.caFile)
			if rerr == nil {
				ca, rerr = xdstest.LoadCA(data)
			}
			if rerr != nil {
				fmt.Fprintln(os.Stderr, "loadtest:", rerr)
				os.Exit(1)
			}
		}
		err = runClients(ctx, f, insecure.NewCredentials(), ca, true)
	} else {
		err = runServer(ctx, f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

func nodeName(i int) string { return "node-" + strconv.Itoa(i) }

func runServer(ctx context.Context, f flags) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	names := make([]string, f.n)
	for i := range names {
		names[i] = nodeName(i)
	}
	mesh := xdstest.NewMesh(trustDomain, names...)
	var (
		src *xdstest.TLSSource
		ca  *xdstest.CA
	)
	if f.mtls {
		var err error
		if ca, err = xdstest.NewCA("load root"); err != nil {
			return err
		}
		cert, err := ca.Issue("spiffe://" + trustDomain + "/meshward")
		if err != nil {
			return err
		}
		src = &xdstest.TLSSource{Cert: cert, CA: ca}
	}
	var (
		svids   x509svid.Source
		bundles x509bundle.Source
	)
	if src != nil {
		svids, bundles = src, src
	}
	srv, err := xds.New(xds.Config{Address: "127.0.0.1:0", Insecure: !f.mtls}, mesh, mesh, svids, bundles)
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	runCtx, stopServer := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Run(runCtx) }()
	defer func() {
		stopServer()
		if err := <-served; err != nil {
			fmt.Fprintln(os.Stderr, "loadtest: xds server:", err)
		}
	}()

	rssBefore := rss("self")
	fmt.Printf("nodes=%d transport=%s clients=%s GOMAXPROCS=%d\n", f.n, map[bool]string{true: "mTLS", false: "plaintext"}[f.mtls],
		map[bool]string{true: "in-process", false: "child process"}[f.inproc], runtime.GOMAXPROCS(0))

	start := time.Now()
	// clientsDone carries the clients' result to waitAll (an early end is
	// an error); clientsExited tells the deferred stop that they are gone,
	// whether or not waitAll took the result.
	clientsDone := make(chan error, 1)
	clientsExited := make(chan struct{})
	childPID := ""
	if f.inproc {
		cctx, stopClients := context.WithCancel(ctx)
		defer func() { stopClients(); <-clientsExited }()
		go func() {
			defer close(clientsExited)
			clientsDone <- runClients(cctx, flags{addr: srv.Addr().String(), n: f.n, dialPar: f.dialPar}, insecure.NewCredentials(), ca, false)
		}()
	} else {
		args := []string{"-role=clients", "-addr=" + srv.Addr().String(), "-n=" + strconv.Itoa(f.n),
			"-dial-parallelism=" + strconv.Itoa(f.dialPar), "-timeout=" + f.timeout.String()}
		if ca != nil {
			dir, err := os.MkdirTemp("", "xds-loadtest-")
			if err != nil {
				return err
			}
			defer func() { _ = os.RemoveAll(dir) }()
			data, err := ca.MarshalPEM()
			if err != nil {
				return err
			}
			p := filepath.Join(dir, "ca.pem")
			if err := os.WriteFile(p, data, 0o600); err != nil {
				return err
			}
			args = append(args, "-ca-file="+p)
		}
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, exe, args...) //nolint:gosec // G204: re-executes this very binary (os.Executable) as the clients
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		stdin, err := cmd.StdinPipe() // closing it stops the child
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		childPID = strconv.Itoa(cmd.Process.Pid)
		go func() { defer close(clientsExited); clientsDone <- cmd.Wait() }()
		defer func() { _ = stdin.Close(); <-clientsExited }()
	}

	// 1. Convergence: every node ACKed the current version of every type.
	if err := waitAll(ctx, srv, f.n, clientsDone, func(ns xds.NodeStatus) bool {
		for _, typ := range []string{"cluster", "listener", "route", "secret"} {
			if ns.Versions[typ] == "" || ns.Acked[typ].Version != ns.Versions[typ] {
				return false
			}
		}
		return true
	}); err != nil {
		return fmt.Errorf("convergence: %w", err)
	}
	converged := time.Since(start)
	runtime.GC()
	fmt.Printf("converged: all %d nodes ACKed clusters, listeners, routes, secrets in %s\n", f.n, converged.Round(time.Millisecond))
	fmt.Printf("server RSS: %s (before clients %s)\n", mib(rss("self")), mib(rssBefore))
	if childPID != "" {
		fmt.Printf("client process RSS: %s\n", mib(rss(childPID)))
	}

	// 2. One config change to every node (a listener), then 3. one
	// certificate rotation of every node (a secret).
	if f.cpuProf != "" { // profile the changes only
		pf, err := os.Create(f.cpuProf)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); _ = pf.Close() }()
	}
	for _, step := range []struct {
		name, typ string
		edit      func(...string)
	}{
		{"config change", "listener", mesh.Change},
		{"rotation", "secret", mesh.Rotate},
	} {
		if err := measure(ctx, srv, f.n, clientsDone, step.name, step.typ, func() { step.edit(names...) }); err != nil {
			return err
		}
	}
	fmt.Printf("server RSS after change: %s\n", mib(rss("self")))
	return nil
}

// measure applies edit to every node, pushes it, and reports the time
// until every node ACKed the new version of typ.
func measure(ctx context.Context, srv *xds.Server, n int, clientsDone <-chan error, name, typ string, edit func()) error {
	before := map[string]string{}
	for _, ns := range srv.Status() {
		before[ns.Node] = ns.Versions[typ]
	}
	t0 := time.Now()
	edit()
	if err := srv.Update(ctx); err != nil {
		return fmt.Errorf("%s: update: %w", name, err)
	}
	updated := time.Since(t0)
	if err := waitAll(ctx, srv, n, clientsDone, func(ns xds.NodeStatus) bool {
		v := ns.Versions[typ]
		return v != before[ns.Node] && ns.Acked[typ].Version == v
	}); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	all := time.Since(t0)
	var lat []time.Duration
	for _, ns := range srv.Status() {
		lat = append(lat, ns.Acked[typ].At.Sub(t0))
	}
	slices.Sort(lat)
	fmt.Printf("%s (%s of every node): rebuilt and set %d snapshots in %s; all ACKs seen after %s (100 ms polling); ACK per node p50 %s p99 %s max %s\n",
		name, typ, n, updated.Round(time.Millisecond), all.Round(time.Millisecond),
		pct(lat, 50).Round(time.Millisecond), pct(lat, 99).Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	return nil
}

// waitAll polls the server until n nodes satisfy ok.
func waitAll(ctx context.Context, srv *xds.Server, n int, clientsDone <-chan error, ok func(xds.NodeStatus) bool) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := 0
	for {
		done := 0
		for _, ns := range srv.Status() {
			if ok(ns) {
				done++
			}
		}
		if done >= n {
			return nil
		}
		last = done
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d nodes: %w", last, n, ctx.Err())
		case err := <-clientsDone:
			if err == nil {
				return errors.New("clients ended early")
			}
			return fmt.Errorf("clients ended early: %w", err)
		case <-tick.C:
		}
	}
}

// runClients runs n simulated Envoys against addr until ctx ends or stdin
// closes (child mode). With ca set they use mutual TLS.
func runClients(ctx context.Context, f flags, creds credentials.TransportCredentials, ca *xdstest.CA, child bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if child {
		go func() { // the parent closes stdin to stop us
			_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
			cancel()
		}()
	}
	sem := make(chan struct{}, max(f.dialPar, 1))
	var (
		wg     sync.WaitGroup
		failed atomic.Int64
		first  atomic.Pointer[error]
	)
	for i := range f.n {
		node := nodeName(i)
		c := creds
		if ca != nil {
			cert, err := ca.Issue(xdstest.SPIFFEID(trustDomain, node))
			if err != nil {
				return err
			}
			c = credentials.NewTLS(xdstest.ClientTLS(ca, cert))
		}
		wg.Go(func() {
			if err := envoy(ctx, f.addr, c, node, sem); err != nil && ctx.Err() == nil {
				failed.Add(1)
				first.CompareAndSwap(nil, &err)
				cancel()
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		return fmt.Errorf("%d clients failed, first: %w", failed.Load(), *first.Load())
	}
	return nil
}

// envoy is one simulated Envoy: one connection, one delta ADS stream,
// subscribe like Envoy, ACK every response.
func envoy(ctx context.Context, addr string, creds credentials.TransportCredentials, node string, sem chan struct{}) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer func() { _ = cc.Close() }()
	sem <- struct{}{}
	c, err := xdsclient.NewDelta(ctx, cc, node)
	if err == nil {
		for _, s := range []struct {
			typ   string
			names []string
		}{
			{resource.ClusterType, nil},
			{resource.ListenerType, nil},
			{resource.RouteType, []string{"inbound", "outbound"}},
			{resource.SecretType, []string{xdstest.CertName, xdstest.CAName, xdstest.APIKeyName(node)}},
		} {
			if err = c.Subscribe(s.typ, s.names...); err != nil {
				break
			}
		}
	}
	<-sem
	if err != nil {
		return err
	}
	for {
		resp, err := c.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := c.ACK(resp); err != nil {
			return err
		}
	}
}

// rss returns VmRSS of a process ("self" or a pid) in bytes, 0 if unknown.
func rss(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p+99)/100 - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
