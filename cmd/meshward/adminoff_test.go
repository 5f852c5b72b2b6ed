package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// listeningPorts are the TCP ports this process listens on, from its file
// descriptors and /proc/self/net/tcp{,6} (Linux).
func listeningPorts(t *testing.T) []int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink("/proc/self/fd/" + fd.Name())
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var ports []int
	for _, f := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue // no IPv6
		}
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fl := strings.Fields(line)
			if len(fl) < 10 || fl[3] != "0A" || !inodes[fl[9]] { // 0A: LISTEN
				continue
			}
			_, hexPort, _ := strings.Cut(fl[1], ":")
			p, err := strconv.ParseUint(hexPort, 16, 16)
			if err != nil {
				t.Fatalf("%s: %q: %v", f, fl[1], err)
			}
			ports = append(ports, int(p))
		}
	}
	slices.Sort(ports)
	return slices.Compact(ports)
}

// deltaClusters opens a delta ADS stream for node and receives its
// clusters once.
func deltaClusters(ctx context.Context, cc *grpc.ClientConn, node string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := discovery.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: node}, TypeUrl: resourcev3.ClusterType}); err != nil {
		return err
	}
	resp, err := s.Recv()
	if err != nil {
		return err
	}
	if len(resp.GetResources()) == 0 {
		return errors.New("no clusters")
	}
	return nil
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAdminOff: with admin.address off, serve listens on the ext_authz
// and xDS ports and nothing else, says so in its log, and still decides
// Checks and serves xDS. With the admin server on, the same count finds
// its port: the count can see a listener.
func TestAdminOff(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts listeners from /proc")
	}
	for _, tc := range []struct {
		name, address string
		off           bool
	}{
		{"off", "off", true},
		{"on", "127.0.0.1:0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			// ext_authz listens on port 0 here: tell the Envoys some address.
			path := testConfigReplacing(t, "\nxds:\n", "\nxds:\n  authzAddress: 127.0.0.1:9191\n")
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			raw = []byte(strings.Replace(string(raw), "admin:\n  address: 127.0.0.1:0\n", "admin:\n  address: "+tc.address+"\n", 1))
			if err := os.WriteFile(path, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			before := listeningPorts(t)
			lw, wait := serveInProcess(t, ctx, io.Discard, "--config", path)
			defer func() {
				cancel()
				wait()
			}()
			lw.waitFor(t, "meshward serving", "msg") // every listener is up before this line
			want := []int{portOf(t, lw.waitFor(t, "ext_authz server listening", "address")), portOf(t, lw.waitFor(t, "xds serving", "address"))}
			if !tc.off {
				want = append(want, portOf(t, lw.waitFor(t, "admin server listening", "address")))
			}
			var added []int
			for _, p := range listeningPorts(t) {
				if !slices.Contains(before, p) {
					added = append(added, p)
				}
			}
			slices.Sort(want)
			if !slices.Equal(added, want) {
				t.Errorf("serve listens on %v, want %v (ext_authz, xDS%s)", added, want, map[bool]string{true: "", false: ", admin"}[tc.off])
			}
			if tc.off {
				lw.waitFor(t, warnAdminOff, "msg")
				if slices.Contains(lw.msgs(), "admin server listening") {
					t.Error("admin server listening although admin.address is off")
				}
			}

			// It still serves: an allowed and a denied Check, and a node's
			// clusters over delta xDS.
			conn := dialAuthz(t, lw)
			waitServing(t, ctx, conn)
			list := viewerPost()
			list.Attributes.Request.Http.Method = "GET"
			ac := authv3.NewAuthorizationClient(conn)
			for _, c := range []struct {
				req   *authv3.CheckRequest
				allow bool
			}{{list, true}, {viewerPost(), false}} {
				r, err := ac.Check(ctx, c.req)
				if err != nil {
					t.Fatal(err)
				}
				if (r.GetOkResponse() != nil) != c.allow {
					t.Errorf("Check %s: %v, want allow=%v", c.req.GetAttributes().GetRequest().GetHttp().GetMethod(), r, c.allow)
				}
			}
			cc, err := grpc.NewClient(lw.waitFor(t, "xds serving", "address"), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			// Without /readyz, retried until the node's snapshot is built.
			for {
				err := deltaClusters(ctx, cc, "planner")
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("planner's clusters over delta xDS: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
