// Package envoysim runs simulated Envoys for load tests and benchmarks:
// each is one gRPC connection and one delta ADS stream that identifies
// itself as Envoy (node id, user agent, build version), subscribes to
// clusters, listeners, routes and its two SDS secrets (and, as its
// clusters name them, the load assignments of its EDS clusters), ACKs
// every response, and on a broken stream reconnects telling the server the
// versions it holds, as Envoy does. It records what it holds and when it
// ACKed each type last, so that a benchmark can measure from a change to
// the ACK of every Envoy it concerns. It does not follow references or
// validate what it is sent: it is a load, not a data plane.
package envoysim

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/meshward/meshward/envoy"
)

// Types are the resource types every Envoy subscribes to.
var Types = []string{resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType, resourcev3.SecretType}

// Envoy is one simulated Envoy.
type Envoy struct {
	// Node is its node id.
	Node string

	mu        sync.Mutex
	versions  map[string]map[string]string // type -> resource name -> version
	acked     map[string]time.Time         // type -> when the last response was ACKed
	responses int
	eds       map[string]bool // the EDS clusters it holds: their load assignments are subscribed
	streams   int             // opened, reconnects included
	ends      []time.Time     // when its latest streams ended (the server ended or refused them), oldest first
}

// maxEnds bounds the stream ends an Envoy remembers.
const maxEnds = 32

// EndedAfter is when the first of its streams that ended after t ended
// (the server ended it or refused it), false when none did since t (of
// the latest 32 ends).
func (e *Envoy) EndedAfter(t time.Time) (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, end := range e.ends {
		if end.After(t) {
			return end, true
		}
	}
	return time.Time{}, false
}

// Has reports whether it holds at least one resource of every type.
func (e *Envoy) Has() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, t := range Types {
		if len(e.versions[t]) == 0 {
			return false
		}
	}
	return true
}

// AckedAt is when it last ACKed a response of typ (zero: never).
func (e *Envoy) AckedAt(typ string) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.acked[typ]
}

// Versions are the resources of typ it holds, name -> version.
func (e *Envoy) Versions(typ string) map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.versions[typ])
}

// Responses is how many responses it received, of every type.
func (e *Envoy) Responses() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.responses
}

// Streams is how many ADS streams it opened (1 + reconnects).
func (e *Envoy) Streams() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.streams
}

// Fleet is a set of Envoys connected to one xDS server.
type Fleet struct {
	Envoys []*Envoy

	cancel context.CancelFunc
	wg     sync.WaitGroup
	failed atomic.Pointer[error]
}

// Option configures Start.
type Option func(*options)

type options struct {
	dialParallelism int
	retry           time.Duration
}

// WithDialParallelism bounds the streams being opened at once (default 128).
func WithDialParallelism(n int) Option { return func(o *options) { o.dialParallelism = max(n, 1) } }

// WithRetry is the wait before reconnecting a broken stream (default 200 ms).
func WithRetry(d time.Duration) Option { return func(o *options) { o.retry = d } }

// Start connects one Envoy per node id in nodes (an id may repeat: the
// pods of one node) to the plaintext xDS server at addr. They run until
// Stop or ctx ends. Start returns at once; Wait says when they have what
// they want.
func Start(ctx context.Context, addr string, nodes []string, opts ...Option) *Fleet {
	o := options{dialParallelism: 128, retry: 200 * time.Millisecond}
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &Fleet{cancel: cancel}
	sem := make(chan struct{}, o.dialParallelism)
	for _, n := range nodes {
		e := &Envoy{Node: n, versions: map[string]map[string]string{}, acked: map[string]time.Time{}, eds: map[string]bool{}}
		f.Envoys = append(f.Envoys, e)
		f.wg.Go(func() {
			if err := e.run(ctx, addr, sem, o.retry); err != nil && ctx.Err() == nil {
				f.failed.CompareAndSwap(nil, &err)
			}
		})
	}
	return f
}

// Stop disconnects every Envoy and waits for them.
func (f *Fleet) Stop() {
	f.cancel()
	f.wg.Wait()
}

// Err is the first error that stopped an Envoy (a broken stream does
// not: it reconnects), nil if none.
func (f *Fleet) Err() error {
	if p := f.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// Wait polls (every 20 ms) until ok holds for every Envoy of envoys, ctx
// ends or an Envoy failed; the error says how many were left.
func (f *Fleet) Wait(ctx context.Context, envoys []*Envoy, ok func(*Envoy) bool) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		left := 0
		for _, e := range envoys {
			if !ok(e) {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if err := f.Err(); err != nil {
			return fmt.Errorf("envoysim: %d of %d Envoys not there: %w", left, len(envoys), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("envoysim: %d of %d Envoys not there: %w", left, len(envoys), ctx.Err())
		case <-tick.C:
		}
	}
}

func (e *Envoy) run(ctx context.Context, addr string, sem chan struct{}, retry time.Duration) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("envoysim: %s: %w", e.Node, err)
	}
	defer func() { _ = cc.Close() }()
	for {
		if err := e.stream(ctx, cc, sem); err != nil && ctx.Err() == nil {
			e.mu.Lock()
			if len(e.ends) == maxEnds {
				e.ends = slices.Delete(e.ends, 0, 1)
			}
			e.ends = append(e.ends, time.Now())
			e.mu.Unlock()
		}
		// Broken (the server stopped, or not ready for this node yet):
		// reconnect, as Envoy does.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}

// stream opens one delta ADS stream, subscribes, and ACKs until it breaks.
func (e *Envoy) stream(ctx context.Context, cc *grpc.ClientConn, sem chan struct{}) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	st, err := discovery.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(sctx)
	if err == nil {
		e.mu.Lock()
		e.streams++
		held := map[string]map[string]string{}
		for t, v := range e.versions {
			held[t] = maps.Clone(v)
		}
		eds := slices.Sorted(maps.Keys(e.eds))
		e.mu.Unlock()
		min := envoy.MinEnvoyVersion
		node := &core.Node{Id: e.Node, Cluster: e.Node, UserAgentName: "envoy",
			UserAgentVersionType: &core.Node_UserAgentBuildVersion{UserAgentBuildVersion: &core.BuildVersion{
				Version: &typev3.SemanticVersion{MajorNumber: min[0], MinorNumber: min[1], Patch: min[2]}}}}
		for i, t := range Types {
			req := &discovery.DeltaDiscoveryRequest{TypeUrl: t, InitialResourceVersions: held[t]}
			if i == 0 {
				req.Node = node
			}
			if t == resourcev3.SecretType {
				req.ResourceNamesSubscribe = []string{envoy.SecretDefault, envoy.SecretRootCA}
			}
			if err = st.Send(req); err != nil {
				break
			}
		}
		if err == nil && len(eds) > 0 {
			err = st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType,
				ResourceNamesSubscribe: eds, InitialResourceVersions: held[resourcev3.EndpointType]})
		}
	}
	<-sem
	if err != nil {
		return err
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		typ := resp.GetTypeUrl()
		e.mu.Lock()
		v := e.versions[typ]
		if v == nil {
			v = map[string]string{}
			e.versions[typ] = v
		}
		for _, r := range resp.GetResources() {
			v[r.GetName()] = r.GetVersion()
		}
		for _, name := range resp.GetRemovedResources() {
			delete(v, name)
		}
		var sub, unsub []string
		if typ == resourcev3.ClusterType {
			sub, unsub = e.edsClusters(resp)
		}
		e.mu.Unlock()
		if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce()}); err != nil {
			return err
		}
		if len(sub)+len(unsub) > 0 {
			if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType,
				ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub}); err != nil {
				return err
			}
		}
		now := time.Now()
		e.mu.Lock()
		e.acked[typ] = now
		e.responses++
		e.mu.Unlock()
	}
}

// edsClusters updates the EDS clusters held from a clusters response and
// returns the load assignments to subscribe to and to drop, as Envoy
// does. The lock is held.
func (e *Envoy) edsClusters(resp *discovery.DeltaDiscoveryResponse) (sub, unsub []string) {
	for _, r := range resp.GetResources() {
		c := &clusterv3.Cluster{}
		isEDS := proto.Unmarshal(r.GetResource().GetValue(), c) == nil && c.GetType() == clusterv3.Cluster_EDS
		switch {
		case isEDS && !e.eds[r.GetName()]:
			e.eds[r.GetName()] = true
			sub = append(sub, r.GetName())
		case !isEDS && e.eds[r.GetName()]:
			delete(e.eds, r.GetName())
			unsub = append(unsub, r.GetName())
		}
	}
	for _, name := range resp.GetRemovedResources() {
		if e.eds[name] {
			delete(e.eds, name)
			unsub = append(unsub, name)
		}
	}
	return sub, unsub
}
