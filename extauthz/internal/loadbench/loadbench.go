// Package loadbench drives many concurrent Checks over one real gRPC
// connection against an Authorization server and, in the same run with
// the same load, against a no-op one (answers OK, does nothing), in
// alternating rounds, so that the cost of deciding is measured as a ratio
// that machine noise affects on both sides alike.
package loadbench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

// Options configure a run. Subject and Requests are required.
type Options struct {
	// Subject is the server under test (e.g. *extauthz.Server).
	Subject authv3.AuthorizationServer
	// Baseline is compared against; default NoOp.
	Baseline authv3.AuthorizationServer
	// Requests are sent in turn, cycling.
	Requests []*authv3.CheckRequest
	// Concurrency is the number of Checks in flight. Default 64.
	Concurrency int
	// PerRound is the number of Checks per server per round. Default 20000.
	PerRound int
	// Rounds of subject and baseline, alternating which goes first. Default 5.
	Rounds int
	// Warmup Checks per server before the first round. Default PerRound/10.
	Warmup int
	// ServerOptions apply to both gRPC servers alike.
	ServerOptions []grpc.ServerOption
	// DecodeResponses makes the load client decode every CheckResponse.
	// By default the client sends pre-encoded requests and only receives
	// the response bytes, so that the client (which shares the machine)
	// spends the same on both servers and the ratio measures the servers.
	DecodeResponses bool
}

// NoOp is the baseline Authorization server: it answers OK and does nothing.
type NoOp struct {
	authv3.UnimplementedAuthorizationServer
}

var okResponse = &authv3.CheckResponse{Status: &status.Status{}}

// Check answers OK.
func (NoOp) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return okResponse, nil
}

// Stats are one round against one server.
type Stats struct {
	Throughput float64 // Checks per second
	P50, P99   time.Duration
	Errors     int // RPC errors (a deny is not an error)
	// CPUPerCheck is the process CPU time (user+system, client and both
	// servers included, so it is comparable between the two) per Check;
	// zero where the platform does not report it.
	CPUPerCheck time.Duration
}

// Result holds every round.
type Result struct {
	Subject, Baseline []Stats
}

// Median returns the per-field medians of rounds.
func Median(rounds []Stats) Stats {
	if len(rounds) == 0 {
		return Stats{}
	}
	pick := func(f func(Stats) float64) float64 {
		v := make([]float64, len(rounds))
		for i, r := range rounds {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	var errs int
	for _, r := range rounds {
		errs += r.Errors
	}
	return Stats{
		Throughput:  pick(func(s Stats) float64 { return s.Throughput }),
		P50:         time.Duration(pick(func(s Stats) float64 { return float64(s.P50) })),
		P99:         time.Duration(pick(func(s Stats) float64 { return float64(s.P99) })),
		Errors:      errs,
		CPUPerCheck: time.Duration(pick(func(s Stats) float64 { return float64(s.CPUPerCheck) })),
	}
}

// ThroughputRatio is the median of the per-round subject/baseline
// throughput ratios (>= 0.85 is the target).
func (r Result) ThroughputRatio() float64 {
	return r.medianRatio(func(s Stats) float64 { return s.Throughput })
}

// P99Ratio is the median of the per-round subject/baseline p99 ratios.
func (r Result) P99Ratio() float64 {
	return r.medianRatio(func(s Stats) float64 { return float64(s.P99) })
}

func (r Result) medianRatio(f func(Stats) float64) float64 {
	var v []float64
	for i := range min(len(r.Subject), len(r.Baseline)) {
		if b := f(r.Baseline[i]); b > 0 {
			v = append(v, f(r.Subject[i])/b)
		}
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// CPURatio is the median of the per-round subject/baseline CPU per Check:
// the cost of deciding, less sensitive to other load on the machine than
// throughput.
func (r Result) CPURatio() float64 {
	return r.medianRatio(func(s Stats) float64 { return float64(s.CPUPerCheck) })
}

// String reports every round and the medians.
func (r Result) String() string {
	var b strings.Builder
	for i := range min(len(r.Subject), len(r.Baseline)) {
		s, n := r.Subject[i], r.Baseline[i]
		fmt.Fprintf(&b, "round %d: subject %.0f/s p99 %v cpu %v/check | no-op %.0f/s p99 %v cpu %v/check | ratio %.3f\n",
			i+1, s.Throughput, s.P99, s.CPUPerCheck, n.Throughput, n.P99, n.CPUPerCheck, s.Throughput/n.Throughput)
	}
	s, n := Median(r.Subject), Median(r.Baseline)
	fmt.Fprintf(&b, "median: subject %.0f/s p50 %v p99 %v cpu %v/check | no-op %.0f/s p50 %v p99 %v cpu %v/check | throughput ratio %.3f, p99 ratio %.3f, cpu ratio %.3f, errors %d/%d\n",
		s.Throughput, s.P50, s.P99, s.CPUPerCheck, n.Throughput, n.P50, n.P99, n.CPUPerCheck, r.ThroughputRatio(), r.P99Ratio(), r.CPURatio(), s.Errors, n.Errors)
	return b.String()
}

// Run starts both servers on 127.0.0.1:0, connects once to each, and runs
// the rounds. It stops both servers before returning.
func Run(ctx context.Context, opts Options) (Result, error) {
	if opts.Subject == nil || len(opts.Requests) == 0 {
		return Result{}, errors.New("loadbench: Subject and Requests are required")
	}
	if opts.Baseline == nil {
		opts.Baseline = NoOp{}
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 64
	}
	if opts.PerRound <= 0 {
		opts.PerRound = 20000
	}
	if opts.Rounds <= 0 {
		opts.Rounds = 5
	}
	if opts.Warmup <= 0 {
		opts.Warmup = opts.PerRound / 10
	}
	subject, stopS, err := serve(opts.Subject, opts)
	if err != nil {
		return Result{}, err
	}
	defer stopS()
	baseline, stopB, err := serve(opts.Baseline, opts)
	if err != nil {
		return Result{}, err
	}
	defer stopB()
	for _, c := range []caller{subject, baseline} {
		if _, err := round(ctx, c, opts, opts.Warmup); err != nil {
			return Result{}, err
		}
	}
	var res Result
	for i := range opts.Rounds {
		order := []bool{true, false}
		if i%2 == 1 {
			order = []bool{false, true}
		}
		for _, isSubject := range order {
			c := baseline
			if isSubject {
				c = subject
			}
			st, err := round(ctx, c, opts, opts.PerRound)
			if err != nil {
				return res, err
			}
			if isSubject {
				res.Subject = append(res.Subject, st)
			} else {
				res.Baseline = append(res.Baseline, st)
			}
		}
	}
	return res, nil
}

// checkMethod is the full gRPC method name of Check.
const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// caller sends request i and waits for its response.
type caller func(ctx context.Context, i int) error

// rawCodec passes pre-encoded messages through and keeps responses as bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("loadbench: raw codec cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("loadbench: raw codec cannot unmarshal into %T", v)
	}
	*b = data
	return nil
}

func (rawCodec) Name() string { return "proto" }

func newCaller(conn *grpc.ClientConn, opts Options) (caller, error) {
	reqs := opts.Requests
	if opts.DecodeResponses {
		c := authv3.NewAuthorizationClient(conn)
		return func(ctx context.Context, i int) error {
			_, err := c.Check(ctx, reqs[i%len(reqs)])
			return err
		}, nil
	}
	raw := make([][]byte, len(reqs))
	for i, r := range reqs {
		b, err := proto.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("loadbench: %w", err)
		}
		raw[i] = b
	}
	codec := grpc.ForceCodec(rawCodec{})
	return func(ctx context.Context, i int) error {
		var resp []byte
		return conn.Invoke(ctx, checkMethod, &raw[i%len(raw)], &resp, codec)
	}, nil
}

func serve(srv authv3.AuthorizationServer, opts Options) (caller, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("loadbench: %w", err)
	}
	g := grpc.NewServer(opts.ServerOptions...)
	authv3.RegisterAuthorizationServer(g, srv)
	done := make(chan struct{})
	go func() { _ = g.Serve(l); close(done) }()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		g.Stop()
		<-done
		return nil, nil, fmt.Errorf("loadbench: %w", err)
	}
	stop := func() {
		_ = conn.Close()
		g.Stop()
		<-done
	}
	call, err := newCaller(conn, opts)
	if err != nil {
		stop()
		return nil, nil, err
	}
	return call, stop, nil
}

// round sends n Checks with opts.Concurrency in flight over one connection.
func round(ctx context.Context, call caller, opts Options, n int) (Stats, error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var errs atomic.Int64
	var wg sync.WaitGroup
	cpu0 := processCPU()
	start := time.Now()
	for range opts.Concurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				err := call(ctx, i)
				lat[i] = time.Since(t0)
				if err != nil {
					errs.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	slices.Sort(lat)
	return Stats{
		Throughput:  float64(n) / elapsed.Seconds(),
		P50:         lat[n/2],
		P99:         lat[n*99/100],
		Errors:      int(errs.Load()),
		CPUPerCheck: cpu / time.Duration(n),
	}, nil
}
