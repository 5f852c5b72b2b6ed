package xds_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshward/meshward/xds"
	"github.com/meshward/meshward/xds/internal/xdsclient"
	"github.com/meshward/meshward/xds/internal/xdstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const td = "mesh.test"

// env is one xDS server on 127.0.0.1:0 with a fake mesh and a test CA.
type env struct {
	srv    *xds.Server
	mesh   *xdstest.Mesh
	ca     *xdstest.CA
	reg    *prometheus.Registry
	events *events
	logs   *syncBuffer
	addr   string
	mtls   bool
	stop   func()
}

type events struct {
	mu  sync.Mutex
	evs []xds.SecurityEvent
}

func (e *events) SecurityEvent(_ context.Context, ev xds.SecurityEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
}

func (e *events) all() []xds.SecurityEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.evs)
}

func (e *events) reasons() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.evs {
		out = append(out, ev.Reason)
	}
	return out
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type envOpts struct {
	insecure  bool
	mesh      *xdstest.Mesh
	ca        *xdstest.CA
	nodeCheck func(*core.Node) error
}

func startEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	mesh := o.mesh
	if mesh == nil {
		mesh = xdstest.NewMesh(td, "a", "b")
	}
	ca := o.ca
	if ca == nil {
		var err error
		if ca, err = xdstest.NewCA("test root"); err != nil {
			t.Fatal(err)
		}
	}
	e := &env{mesh: mesh, ca: ca, reg: prometheus.NewRegistry(), events: &events{}, logs: &syncBuffer{}, mtls: !o.insecure}
	var (
		svids   x509svid.Source
		bundles x509bundle.Source
	)
	if !o.insecure {
		cert, err := ca.Issue("spiffe://" + td + "/meshward")
		if err != nil {
			t.Fatal(err)
		}
		src := xdstest.TLSSource{Cert: cert, CA: ca}
		svids, bundles = src, src
	}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts := []xds.Option{xds.WithLogger(log), xds.WithRegisterer(e.reg), xds.WithEventSink(e.events)}
	if o.nodeCheck != nil {
		opts = append(opts, xds.WithNodeCheck(o.nodeCheck))
	}
	srv, err := xds.New(xds.Config{Address: "127.0.0.1:0", Insecure: o.insecure}, mesh, mesh, svids, bundles, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	e.srv, e.addr = srv, srv.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(e.stop)
	waitFor(testCtx(t), t, "server ready", func() bool { return srv.Ready() == nil })
	return e
}

// dial connects as a node presenting a certificate for spiffeID ("" for a
// certificate without SPIFFE ID); in insecure mode without TLS.
func (e *env) dial(t testing.TB, spiffeID string) *grpc.ClientConn {
	t.Helper()
	creds := insecure.NewCredentials()
	if e.mtls {
		cert, err := e.ca.Issue(spiffeID)
		if err != nil {
			t.Fatal(err)
		}
		creds = credentials.NewTLS(xdstest.ClientTLS(e.ca, cert))
	}
	return dialCreds(t, e.addr, creds)
}

func dialCreds(t testing.TB, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, t testing.TB, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func nodeStatus(srv *xds.Server, node string) (xds.NodeStatus, bool) {
	for _, ns := range srv.Status() {
		if ns.Node == node {
			return ns, true
		}
	}
	return xds.NodeStatus{}, false
}

// allAcked reports whether node ACKed the current version of every type.
func allAcked(srv *xds.Server, node string) bool {
	ns, ok := nodeStatus(srv, node)
	if !ok || len(ns.Versions) == 0 {
		return false
	}
	for typ, v := range ns.Versions {
		if ns.Acked[typ].Version != v {
			return false
		}
	}
	return true
}

var routeNames = []string{"inbound", "outbound"}

func secretNames(node string) []string {
	return []string{xdstest.CertName, xdstest.CAName, xdstest.APIKeyName(node)}
}

// resp is one received response, either protocol.
type resp struct {
	typ, version string
	names        []string
	versions     map[string]string // delta only: resource name -> version
}

// client is an Envoy-like ADS client of either protocol.
type client interface {
	Subscribe(typ string, names ...string) error
	SubscribeAs(node, typ string, names ...string) error
	Next() (resp, error)
	ACK() error
	NACK(msg string) error
}

type deltaClient struct {
	t    *testing.T
	c    *xdsclient.Delta
	last *discovery.DeltaDiscoveryResponse
}

func (d *deltaClient) Subscribe(typ string, names ...string) error {
	return d.c.Subscribe(typ, names...)
}
func (d *deltaClient) SubscribeAs(node, typ string, names ...string) error {
	return d.c.SubscribeAs(node, typ, names...)
}
func (d *deltaClient) ACK() error            { return d.c.ACK(d.last) }
func (d *deltaClient) NACK(msg string) error { return d.c.NACK(d.last, msg) }
func (d *deltaClient) Next() (resp, error) {
	r, err := d.c.Recv()
	if err != nil {
		return resp{}, err
	}
	d.last = r
	out := resp{typ: r.GetTypeUrl(), version: r.GetSystemVersionInfo(), versions: map[string]string{}}
	for _, x := range r.GetResources() {
		out.names = append(out.names, x.GetName())
		out.versions[x.GetName()] = x.GetVersion()
	}
	return out, nil
}

type sotwClient struct {
	t    *testing.T
	c    *xdsclient.SotW
	last *discovery.DiscoveryResponse
}

func (s *sotwClient) Subscribe(typ string, names ...string) error {
	return s.c.Subscribe(typ, names...)
}
func (s *sotwClient) SubscribeAs(node, typ string, names ...string) error {
	return s.c.SubscribeAs(node, typ, names...)
}
func (s *sotwClient) ACK() error            { return s.c.ACK(s.last) }
func (s *sotwClient) NACK(msg string) error { return s.c.NACK(s.last, msg) }
func (s *sotwClient) Next() (resp, error) {
	r, err := s.c.Recv()
	if err != nil {
		return resp{}, err
	}
	s.last = r
	out := resp{typ: r.GetTypeUrl(), version: r.GetVersionInfo()}
	for _, x := range r.GetResources() {
		out.names = append(out.names, resourceName(s.t, x))
	}
	return out, nil
}

var protocols = []struct {
	name  string
	delta bool
}{
	{"delta", true},
	{"sotw", false},
}

// connect opens an ADS stream of the given protocol as node over cc; the
// stream ends when the test does or when the returned cancel is called.
func connect(t *testing.T, cc *grpc.ClientConn, delta bool, node string) (client, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	t.Cleanup(cancel)
	if delta {
		c, err := xdsclient.NewDelta(ctx, cc, node)
		if err != nil {
			t.Fatal(err)
		}
		return &deltaClient{t: t, c: c}, cancel
	}
	c, err := xdsclient.NewSotW(ctx, cc, node)
	if err != nil {
		t.Fatal(err)
	}
	return &sotwClient{t: t, c: c}, cancel
}

type sub struct {
	typ   string
	names []string
}

func allSubs(node string) []sub {
	return []sub{
		{resource.ClusterType, nil}, {resource.ListenerType, nil},
		{resource.RouteType, routeNames}, {resource.SecretType, secretNames(node)},
	}
}

// syncTypes subscribes and ACKs until a response of every subscribed type
// arrived; it returns the names and version received by type. A
// response of a type in nack is NACKed instead (once).
func syncTypes(t *testing.T, c client, subs []sub, nack map[string]bool) (map[string][]string, map[string]string) {
	t.Helper()
	for _, s := range subs {
		if err := c.Subscribe(s.typ, s.names...); err != nil {
			t.Fatal(err)
		}
	}
	got, versions := map[string][]string{}, map[string]string{}
	for len(got) < len(subs) {
		r, err := c.Next()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if _, dup := got[r.typ]; dup {
			t.Fatalf("%s sent twice (version %s)", r.typ, r.version)
		}
		got[r.typ], versions[r.typ] = r.names, r.version
		if nack[r.typ] {
			err = c.NACK("rejected by test")
		} else {
			err = c.ACK()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return got, versions
}

func TestDeltaAndSotWConverge(t *testing.T) {
	e := startEnv(t, envOpts{})
	want := map[string][]string{
		resource.ClusterType:  {"local_app", "meshward_authz", "peer"},
		resource.ListenerType: {"inbound", "outbound"},
		resource.RouteType:    {"inbound", "outbound"},
		resource.SecretType:   {xdstest.CAName, xdstest.APIKeyName("a"), xdstest.CertName},
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := testCtx(t)
			c, stop := connect(t, e.dial(t, xdstest.SPIFFEID(td, "a")), p.delta, "a")
			got, versions := syncTypes(t, c, allSubs("a"), nil)
			for typ, w := range want {
				if g := slices.Sorted(slices.Values(got[typ])); !slices.Equal(g, w) {
					t.Errorf("%s: got %v, want %v", typ, g, w)
				}
			}
			waitFor(ctx, t, "all types ACKed", func() bool { return allAcked(e.srv, "a") })
			ns, _ := nodeStatus(e.srv, "a")
			for typ, v := range versions {
				if ns.Versions[typeLabel(typ)] != v || v == "" {
					t.Errorf("%s: received version %q, snapshot version %q", typ, v, ns.Versions[typeLabel(typ)])
				}
			}
			if n := metric(t, e.reg, "meshward_xds_push_duration_seconds"); n < 4 {
				t.Errorf("push durations observed = %v, want >= 4 (one per type)", n)
			}
			if v := metric(t, e.reg, "meshward_xds_connected_proxies"); v != 1 {
				t.Errorf("connected proxies = %v, want 1", v)
			}
			stop()
			waitFor(ctx, t, "node gone after its stream closed", func() bool { return len(e.srv.Status()) == 0 })
		})
	}
}

func typeLabel(typ string) string {
	return map[string]string{resource.ClusterType: "cluster", resource.ListenerType: "listener",
		resource.RouteType: "route", resource.SecretType: "secret"}[typ]
}

// After a NACK the server sends nothing for that type until the content
// changes, and then the new version. The secret subscription after the
// NACK is a sync point: the server handles a stream's requests in order
// and would have queued a resend of the rejected listeners before the
// secrets.
func TestNACKIsNotResent(t *testing.T) {
	e := startEnv(t, envOpts{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := testCtx(t)
			before := metric(t, e.reg, "meshward_xds_nacks_total", "type", "listener")
			c, _ := connect(t, e.dial(t, xdstest.SPIFFEID(td, "a")), p.delta, "a")
			subs := allSubs("a")
			_, versions := syncTypes(t, c, subs[:3], map[string]bool{resource.ListenerType: true})
			rejected := versions[resource.ListenerType]

			if err := c.Subscribe(resource.SecretType, secretNames("a")...); err != nil {
				t.Fatal(err)
			}
			for {
				r, err := c.Next()
				if err != nil {
					t.Fatal(err)
				}
				if r.typ == resource.ListenerType {
					t.Fatalf("listeners resent after NACK (version %s, rejected %s)", r.version, rejected)
				}
				if err := c.ACK(); err != nil {
					t.Fatal(err)
				}
				if r.typ == resource.SecretType {
					break
				}
			}
			if got := metric(t, e.reg, "meshward_xds_nacks_total", "type", "listener") - before; got != 1 {
				t.Errorf("nacks counted = %v, want 1", got)
			}
			ns, _ := nodeStatus(e.srv, "a")
			if ns.LastNACK == nil || ns.LastNACK.Type != "listener" || ns.LastNACK.Version != rejected || ns.LastNACK.Message != "rejected by test" {
				t.Errorf("last NACK = %+v, want listener %s", ns.LastNACK, rejected)
			}
			if !strings.Contains(e.logs.String(), "NACK") {
				t.Error("NACK not logged")
			}
			if !slices.ContainsFunc(e.events.all(), func(ev xds.SecurityEvent) bool {
				return ev.Kind == xds.EventNACK && ev.Node == "a" && ev.Type == "listener" && ev.Version == rejected
			}) {
				t.Error("no NACK security event")
			}

			e.mesh.Change("a")
			if err := e.srv.Update(ctx, "a"); err != nil {
				t.Fatal(err)
			}
			r, err := c.Next()
			if err != nil {
				t.Fatal(err)
			}
			if r.typ != resource.ListenerType || r.version == rejected {
				t.Fatalf("after change got %s version %s, want listeners with a new version (rejected %s)", r.typ, r.version, rejected)
			}
			if err := c.ACK(); err != nil {
				t.Fatal(err)
			}
			waitFor(ctx, t, "new listeners ACKed", func() bool { return allAcked(e.srv, "a") })
		})
	}
}

func resourceName(t *testing.T, a *anypb.Any) string {
	t.Helper()
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatalf("unmarshal %s: %v", a.GetTypeUrl(), err)
	}
	return cache.GetResourceName(m)
}

// metric returns the value of a counter or gauge (0 if absent) whose
// labels include the given name/value pairs; for a histogram its count.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

// Envoy over state-of-the-world ADS asks for the secrets of its clusters
// before it knows its listeners (clusters warm before LDS starts), so its
// first SDS request names a subset of the node's secrets. It must be
// answered, or the clusters never warm; then a growing subscription gets
// the rest.
func TestSotWSecretSubsetIsAnswered(t *testing.T) {
	e := startEnv(t, envOpts{})
	c, _ := connect(t, e.dial(t, xdstest.SPIFFEID(td, "a")), false, "a")
	syncTypes(t, c, allSubs("a")[:1], nil)
	got, _ := syncTypes(t, c, []sub{{resource.SecretType, []string{xdstest.CertName, xdstest.CAName}}}, nil)
	if g := slices.Sorted(slices.Values(got[resource.SecretType])); !slices.Equal(g, []string{xdstest.CAName, xdstest.CertName}) {
		t.Fatalf("subset: got %v", g)
	}
	got, _ = syncTypes(t, c, []sub{{resource.SecretType, secretNames("a")}}, nil)
	if !slices.Contains(got[resource.SecretType], xdstest.APIKeyName("a")) {
		t.Fatalf("grown subscription: got %v", got[resource.SecretType])
	}
}

// TestNodeCheckWarnsAndServes: the node check (the Envoy version check in
// serve) sees each stream's node once; its complaint is logged and the
// node is served all the same.
func TestNodeCheckWarnsAndServes(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	e := startEnv(t, envOpts{nodeCheck: func(n *core.Node) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, n.GetId())
		return errors.New("too old for this test")
	}})
	ctx := testCtx(t)
	c, stop := connect(t, e.dial(t, xdstest.SPIFFEID(td, "a")), false, "a")
	defer stop()
	syncTypes(t, c, allSubs("a"), nil)
	waitFor(ctx, t, "all types ACKed", func() bool { return allAcked(e.srv, "a") })
	mu.Lock()
	got := slices.Clone(seen)
	mu.Unlock()
	if !slices.Equal(got, []string{"a"}) {
		t.Errorf("node check saw %v, want [a] (once per stream)", got)
	}
	if !strings.Contains(e.logs.String(), "too old for this test") {
		t.Errorf("the check's error was not logged:\n%s", e.logs.String())
	}
}
