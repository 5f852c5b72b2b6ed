package xds_test

import (
	"context"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshward/meshward/xds/internal/xdsclient"
)

// BenchmarkPushChange is one config change of one node: rebuild the
// snapshot (resources, content versions, SDS reference check), set it,
// and deliver it over a real delta ADS stream to a client that ACKs.
// For N nodes at once see xds/internal/loadtest.
func BenchmarkPushChange(b *testing.B) {
	e := startEnv(b, envOpts{insecure: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := xdsclient.NewDelta(ctx, e.dial(b, ""), "a")
	if err != nil {
		b.Fatal(err)
	}
	got := make(chan string, 16)
	go func() {
		defer close(got)
		for {
			r, err := c.Recv()
			if err != nil {
				return
			}
			if c.ACK(r) != nil {
				return
			}
			got <- r.GetTypeUrl()
		}
	}()
	for _, s := range []struct {
		typ   string
		names []string
	}{{resource.ClusterType, nil}, {resource.ListenerType, nil}, {resource.RouteType, routeNames}, {resource.SecretType, secretNames("a")}} {
		if err := c.Subscribe(s.typ, s.names...); err != nil {
			b.Fatal(err)
		}
	}
	for range 4 {
		<-got
	}
	b.ReportAllocs()
	for b.Loop() {
		e.mesh.Change("a")
		if err := e.srv.Update(ctx, "a"); err != nil {
			b.Fatal(err)
		}
		if typ, ok := <-got; !ok || typ != resource.ListenerType {
			b.Fatalf("got %q, want listeners", typ)
		}
	}
	b.StopTimer()
	cancel()
	for range got {
	}
}
