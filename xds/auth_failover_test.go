package xds_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/meshward/meshward/envoy"
	"github.com/meshward/meshward/xds/internal/xdsclient"
	"github.com/meshward/meshward/xds/internal/xdstest"
)

// freezer is a TCP proxy to a switchable target that can stop forwarding
// in both directions while keeping every connection open: a replica that
// vanished (host gone, network partition) without closing its sockets,
// which a client notices only by its own keepalive.
type freezer struct {
	ln     net.Listener
	target atomic.Value // string
	wg     sync.WaitGroup
	mu     sync.Mutex
	gen    *int // connections of an older generation are frozen
	conns  []net.Conn
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, gen: new(int)}
	f.target.Store(target)
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *freezer) addr() string { return f.ln.Addr().String() }

// freeze stops forwarding on the connections open now; later ones are
// proxied to newTarget.
func (f *freezer) freeze(newTarget string) {
	f.target.Store(newTarget)
	f.mu.Lock()
	f.gen = new(int)
	f.mu.Unlock()
}

func (f *freezer) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", f.target.Load().(string))
		if err != nil {
			_ = c.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, c, up)
		gen := f.gen
		f.mu.Unlock()
		f.wg.Add(2)
		go f.pipe(c, up, gen)
		go f.pipe(up, c, gen)
	}
}

// pipe copies src to dst while the connection's generation is current;
// once frozen it keeps reading (so the sender sees no back-pressure, as
// with a host that vanished) and forwards nothing.
func (f *freezer) pipe(dst, src net.Conn, gen *int) {
	defer f.wg.Done()
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		f.mu.Lock()
		current := f.gen == gen
		f.mu.Unlock()
		if !current {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (f *freezer) close() {
	_ = f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// bootstrapKeepalive reads the HTTP/2 keepalive of the xDS cluster from
// the bootstrap meshward writes, so that the client below behaves as the
// bootstrap tells Envoy to.
func bootstrapKeepalive(t *testing.T, xdsAddr string) keepalive.ClientParameters {
	t.Helper()
	bs, err := envoy.Bootstrap(envoy.Agent{Name: "a"}, envoy.BootstrapOptions{XDSAddress: xdsAddr, TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	var po httpv3.HttpProtocolOptions
	c := bs.GetStaticResources().GetClusters()[0]
	if err := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(&po); err != nil {
		t.Fatal(err)
	}
	ka := po.GetExplicitHttpConfig().GetHttp2ProtocolOptions().GetConnectionKeepalive()
	if ka == nil {
		t.Fatal("the bootstrap's xDS cluster has no HTTP/2 keepalive: a vanished replica would be noticed only by the OS, after hours")
	}
	return keepalive.ClientParameters{Time: ka.GetInterval().AsDuration(), Timeout: ka.GetTimeout().AsDuration(), PermitWithoutStream: true}
}

// TestXDSFailoverToAnotherReplica: an ADS client using the bootstrap's
// keepalive (grpc-go standing in for Envoy, which is not installable
// here) leaves a replica that stops answering within the keepalive
// interval plus timeout, reconnects through the same address to another
// replica, and gets the same versions there (versions are content
// hashes). The xDS server must also accept PINGs that often.
func TestXDSFailoverToAnotherReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a keepalive timeout (about 15 s)")
	}
	t.Parallel() // waits, mostly
	ca, err := xdstest.NewCA("test root")
	if err != nil {
		t.Fatal(err)
	}
	mesh := xdstest.NewMesh(td, "a")
	r1 := startEnv(t, envOpts{mesh: mesh, ca: ca})
	r2 := startEnv(t, envOpts{mesh: mesh, ca: ca})
	proxy := newFreezer(t, r1.addr)
	ka := bootstrapKeepalive(t, proxy.addr())

	cert, err := ca.Issue(xdstest.SPIFFEID(td, "a"))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(proxy.addr(), grpc.WithTransportCredentials(credentials.NewTLS(xdstest.ClientTLS(ca, cert))),
		grpc.WithKeepaliveParams(ka))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// clusters opens a delta stream, gets and ACKs the clusters, and
	// returns their versions and a channel that receives the error ending
	// the stream.
	clusters := func() (map[string]string, <-chan error) {
		t.Helper()
		st, err := xdsclient.NewDelta(ctx, cc, "a")
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Subscribe(resource.ClusterType); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if err := st.ACK(r); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, x := range r.GetResources() {
			got[x.GetName()] = x.GetVersion()
		}
		// Wait on the stream: it must end when the replica stops answering.
		ended := make(chan error, 1)
		go func() {
			for {
				if _, err := st.Recv(); err != nil {
					ended <- err
					return
				}
			}
		}()
		return got, ended
	}
	before, streamEnded := clusters()
	if len(before) == 0 {
		t.Fatal("no clusters from replica 1")
	}
	waitFor(ctx, t, "replica 1 to see the ACK", func() bool {
		ns, ok := nodeStatus(r1.srv, "a")
		return ok && ns.Versions["cluster"] != "" && ns.Acked["cluster"].Version == ns.Versions["cluster"]
	})

	frozenAt := time.Now()
	proxy.freeze(r2.addr)
	select {
	case err := <-streamEnded:
		if errors.Is(err, io.EOF) {
			t.Fatalf("stream ended with EOF, want a keepalive failure")
		}
		took := time.Since(frozenAt)
		if limit := ka.Time + ka.Timeout + 5*time.Second; took > limit {
			t.Errorf("left the frozen replica after %v, want within %v", took, limit)
		}
		t.Logf("left the frozen replica after %v (%v)", took.Round(100*time.Millisecond), err)
	case <-time.After(ka.Time + ka.Timeout + 15*time.Second):
		t.Fatal("the stream to a replica that stopped answering is still open")
	}

	after, _ := clusters() // grpc reconnects through the proxy, now to replica 2
	if !mapsEqual(before, after) {
		t.Errorf("replica 2 versions %v differ from replica 1's %v", after, before)
	}
	if _, ok := nodeStatus(r2.srv, "a"); !ok {
		t.Error("the reconnected stream did not reach replica 2")
	}
}

// TestServerLeavesANodeThatStopsAnswering: the other direction. A node
// whose Envoy vanished without closing its connection (frozen behind the
// proxy, so it answers no PING) is noticed by the server's own keepalive
// (a PING after 30 s without traffic, 10 s to answer): its stream ends,
// it no longer counts as connected, and its snapshot is dropped.
func TestServerLeavesANodeThatStopsAnswering(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the server's keepalive (about 40 s)")
	}
	t.Parallel() // waits, mostly
	e := startEnv(t, envOpts{})
	proxy := newFreezer(t, e.addr)
	cert, err := e.ca.Issue(xdstest.SPIFFEID(td, "a"))
	if err != nil {
		t.Fatal(err)
	}
	// No client keepalive: the client must not be the one that notices.
	cc, err := grpc.NewClient(proxy.addr(), grpc.WithTransportCredentials(credentials.NewTLS(xdstest.ClientTLS(e.ca, cert))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	st, err := xdsclient.NewDelta(ctx, cc, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Subscribe(resource.ClusterType); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.ACK(r); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "a connected", func() bool { return metric(t, e.reg, "meshward_xds_connected_proxies") == 1 })

	frozenAt := time.Now()
	proxy.freeze(e.addr) // a and its connection stay, silent
	limit := 30*time.Second + 10*time.Second + 10*time.Second
	for metric(t, e.reg, "meshward_xds_connected_proxies") != 0 {
		if time.Since(frozenAt) > limit {
			t.Fatalf("node a still connected %v after it stopped answering", limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("server left the silent node after %v", time.Since(frozenAt).Round(100*time.Millisecond))
	if _, ok := nodeStatus(e.srv, "a"); ok {
		t.Error("the silent node's state is still kept")
	}
}
