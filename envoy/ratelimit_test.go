package envoy

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// quotaMesh is two agents with the given quotas.
func quotaMesh(qs ...Quota) Mesh {
	return Mesh{
		TrustDomain: "mesh.local",
		Authz:       Authz{Address: "127.0.0.1:9191", Plaintext: true},
		Agents: []Agent{
			{Name: "planner", SPIFFEID: "spiffe://mesh.local/ns/agents/sa/planner", InboundPort: 15001, OutboundPort: 15101, App: "127.0.0.1:8081",
				Peers: []Peer{{Name: "tools", Addresses: []string{"127.0.0.1:15003"}}}},
			{Name: "tools", SPIFFEID: "spiffe://mesh.local/ns/agents/sa/tools", InboundPort: 15003, App: "127.0.0.1:8083"},
		},
		Quotas: qs,
	}
}

// listenerHCM returns the connection manager of listener name.
func listenerHCM(t *testing.T, nr *NodeResources, name string) *hcmv3.HttpConnectionManager {
	t.Helper()
	i := slices.IndexFunc(nr.Listeners, func(l *listenerv3.Listener) bool { return l.GetName() == name })
	if i < 0 {
		t.Fatalf("no listener %q", name)
	}
	var h hcmv3.HttpConnectionManager
	if err := nr.Listeners[i].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
		t.Fatal(err)
	}
	return &h
}

// inboundRateLimit returns the inbound listener's local rate limit
// config of node, nil if it has none; it must be the first filter.
func inboundRateLimit(t *testing.T, m Mesh, node string) *localrlv3.LocalRateLimit {
	t.Helper()
	nr, err := TranslateAgent(m, node)
	if err != nil {
		t.Fatal(err)
	}
	checkNode(t, node, nr)
	if len(nr.Listeners) > 1 && slices.ContainsFunc(listenerHCM(t, nr, ListenerOutbound).GetHttpFilters(), func(f *hcmv3.HttpFilter) bool { return f.GetName() == localRateLimitName }) {
		t.Error("the outbound listener has a local rate limit: quotas are about an agent's callers")
	}
	filters := listenerHCM(t, nr, ListenerInbound).GetHttpFilters()
	for i, f := range filters {
		if f.GetName() != localRateLimitName {
			continue
		}
		if i != 0 {
			t.Errorf("local rate limit is filter %d, want the first (before jwt_authn and ext_authz)", i)
		}
		var rl localrlv3.LocalRateLimit
		if err := f.GetTypedConfig().UnmarshalTo(&rl); err != nil {
			t.Fatal(err)
		}
		return &rl
	}
	return nil
}

// descriptorsOf describes each descriptor: its entries and its bucket.
func descriptorsOf(rl *localrlv3.LocalRateLimit) []string {
	var out []string
	for _, d := range rl.GetDescriptors() {
		var e []string
		for _, en := range d.GetEntries() {
			e = append(e, en.GetKey()+"="+en.GetValue())
		}
		tb := d.GetTokenBucket()
		out = append(out, strings.Join(e, ",")+" max="+itoa(tb.GetMaxTokens())+" fill="+itoa(tb.GetTokensPerFill().GetValue())+"/"+tb.GetFillInterval().AsDuration().String())
	}
	return out
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

func TestLocalRateLimitQuotaForms(t *testing.T) {
	const planner, viewer = "spiffe://mesh.local/ns/agents/sa/planner", "spiffe://mesh.local/ns/agents/sa/viewer"
	tests := []struct {
		name     string
		quotas   []Quota
		headroom uint32
		want     []string // descriptors; nil: no filter at all
	}{
		{name: "no quotas"},
		{name: "every caller: a bucket per peer certificate, headroom 2 by default",
			quotas: []Quota{{Name: "all", Rate: 120, Per: time.Minute, Burst: 30}},
			want:   []string{"meshward_quota=all,meshward_client_cert= max=60 fill=240/1m0s"}},
		{name: "defaults: per 1m, burst = rate",
			quotas: []Quota{{Name: "all", Rate: 10}},
			want:   []string{"meshward_quota=all,meshward_client_cert= max=20 fill=20/1m0s"}},
		{name: "headroom 1 is the authorizer's bucket",
			quotas: []Quota{{Name: "all", Rate: 10, Per: time.Second, Burst: 3}}, headroom: 1,
			want: []string{"meshward_quota=all,meshward_client_cert= max=3 fill=10/1s"}},
		{name: "exact callers, each once, patterns left to the authorizer",
			quotas: []Quota{{Name: "some", Callers: []string{viewer, "spiffe://mesh.local/ns/*/sa/planner", viewer, planner}, Rate: 5, Per: time.Second, Burst: 5}},
			want: []string{
				"meshward_quota=some,meshward_caller=" + viewer + " max=10 fill=10/1s",
				"meshward_quota=some,meshward_caller=" + planner + " max=10 fill=10/1s",
			}},
		{name: "patterns only: nothing Envoy can enforce",
			quotas: []Quota{{Name: "p", Callers: []string{"spiffe://mesh.local/ns/*/sa/*"}, Rate: 5}}},
		{name: "refill faster than 50ms: scaled to 50ms at the same rate",
			quotas: []Quota{{Name: "fast", Callers: []string{planner}, Rate: 1, Per: 10 * time.Millisecond, Burst: 4}},
			want:   []string{"meshward_quota=fast,meshward_caller=" + planner + " max=8 fill=10/50ms"}},
		{name: "odd interval: whole milliseconds, rounded down (refills sooner)",
			quotas: []Quota{{Name: "odd", Rate: 3, Per: 7*time.Millisecond + 500*time.Microsecond}},
			want:   []string{"meshward_quota=odd,meshward_client_cert= max=6 fill=42/52ms"}},
		{name: "too large for Envoy's uint32: left to the authorizer",
			quotas: []Quota{{Name: "huge", Rate: math.MaxUint32, Per: time.Second}, {Name: "ok", Rate: 1}},
			want:   []string{"meshward_quota=ok,meshward_client_cert= max=2 fill=2/1m0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := quotaMesh(tt.quotas...)
			m.Options.RateLimitHeadroom = tt.headroom
			for _, node := range []string{"planner", "tools"} {
				rl := inboundRateLimit(t, m, node)
				if tt.want == nil {
					if rl != nil {
						t.Fatalf("%s: unexpected local rate limit %v", node, descriptorsOf(rl))
					}
					continue
				}
				if rl == nil {
					t.Fatalf("%s: no local rate limit filter", node)
				}
				if got := descriptorsOf(rl); !slices.Equal(got, tt.want) {
					t.Errorf("%s: descriptors\n got %q\nwant %q", node, got, tt.want)
				}
				if len(rl.GetRateLimits()) != len(tt.want) {
					t.Errorf("%s: %d rate_limits for %d descriptors", node, len(rl.GetRateLimits()), len(tt.want))
				}
				if rl.GetFilterEnabled().GetDefaultValue().GetNumerator() != 100 || rl.GetFilterEnforced().GetDefaultValue().GetNumerator() != 100 {
					t.Errorf("%s: filter not enabled and enforced for every request (Envoy's default is 0%%)", node)
				}
				if rl.GetTokenBucket() != nil || rl.GetAlwaysConsumeDefaultTokenBucket().GetValue() {
					t.Errorf("%s: a default token bucket would limit requests no quota applies to", node)
				}
				if !rl.GetEnableRetryAfterHeader() {
					t.Errorf("%s: no retry-after on Envoy's 429", node)
				}
				perCert := slices.ContainsFunc(tt.want, func(d string) bool { return strings.Contains(d, clientCertKey) })
				if got := rl.GetMaxDynamicDescriptors(); perCert != (got != nil) || (perCert && got.GetValue() != maxCertBuckets) {
					t.Errorf("%s: max_dynamic_descriptors %v with per-certificate buckets %v", node, got, perCert)
				}
			}
		})
	}
}

// TestLocalRateLimitMatchesXFCC evaluates the generated caller matchers on
// the x-forwarded-client-cert values the inbound listener's connection
// manager writes, and checks that it writes them so: SANITIZE_SET with
// the URI only, which puts the peer's URI SAN last.
func TestLocalRateLimitMatchesXFCC(t *testing.T) {
	const planner = "spiffe://mesh.local/ns/agents/sa/planner"
	m := quotaMesh(Quota{Name: "q", Callers: []string{planner}, Rate: 1})
	nr, err := TranslateAgent(m, "tools")
	if err != nil {
		t.Fatal(err)
	}
	h := listenerHCM(t, nr, ListenerInbound)
	if h.GetForwardClientCertDetails() != hcmv3.HttpConnectionManager_SANITIZE_SET {
		t.Fatalf("forward_client_cert_details %v: the client could set the header the quotas key on", h.GetForwardClientCertDetails())
	}
	if d := h.GetSetCurrentClientCertDetails(); !d.GetUri() || d.GetDns() || d.GetCert() || d.GetChain() || d.GetSubject().GetValue() {
		t.Fatalf("set_current_client_cert_details %v: URI must be the only (and so the last) detail", d)
	}
	rl := inboundRateLimit(t, m, "tools")
	sm := rl.GetRateLimits()[0].GetActions()[1].GetHeaderValueMatch().GetHeaders()[0]
	if sm.GetName() != xfccHeader {
		t.Fatalf("matcher on %q", sm.GetName())
	}
	suf := sm.GetStringMatch().GetSuffix()
	const by = "By=spiffe://mesh.local/ns/agents/sa/tools;Hash=4f2a"
	for xfcc, want := range map[string]bool{
		by + ";URI=" + planner:                                                    true,
		by + ";URI=spiffe://mesh.local/ns/agents/sa/xplanner":                     false,
		by + ";URI=spiffe://mesh.local/ns/agents/sa/planner/sub":                  false,
		by + ";URI=spiffe://other.td/ns/agents/sa/planner":                        false,
		"By=" + planner + ";Hash=4f2a;URI=spiffe://mesh.local/ns/agents/sa/tools": false,
	} {
		if got := strings.HasSuffix(xfcc, suf); got != want {
			t.Errorf("%s: matched %v, want %v", xfcc, got, want)
		}
	}
}

func TestQuotaValidation(t *testing.T) {
	tests := []struct {
		name string
		q    []Quota
		o    Options
		want []string
	}{
		{name: "missing name and rate", q: []Quota{{}}, want: []string{"quotas[0].name: required", "quotas[0].rate: must be at least 1"}},
		{name: "twice", q: []Quota{{Name: "a", Rate: 1}, {Name: "a", Rate: 1}}, want: []string{`quotas[1].name: quota "a" defined twice`}},
		{name: "per below 1ms", q: []Quota{{Name: "a", Rate: 1, Per: time.Microsecond}}, want: []string{"quotas[0].per: must be at least 1ms"}},
		{name: "negative burst", q: []Quota{{Name: "a", Rate: 1, Burst: -1}}, want: []string{"quotas[0].burst: must not be negative"}},
		{name: "caller of another trust domain", q: []Quota{{Name: "a", Rate: 1, Callers: []string{"spiffe://other/ns/a"}}}, want: []string{"quotas[0].callers[0]:", "not a SPIFFE ID of trust domain"}},
		{name: "partial wildcard", q: []Quota{{Name: "a", Rate: 1, Callers: []string{"spiffe://mesh.local/ns/a*"}}}, want: []string{"whole segment"}},
		{name: "XFCC separator in an ID", q: []Quota{{Name: "a", Rate: 1, Callers: []string{"spiffe://mesh.local/ns/a;URI=x"}}}, want: []string{"letters, digits"}},
		{name: "dot segment", q: []Quota{{Name: "a", Rate: 1, Callers: []string{"spiffe://mesh.local/ns/../a"}}}, want: []string{"dot path segment"}},
		{name: "headroom above 100", o: Options{RateLimitHeadroom: 101}, want: []string{"options.rateLimitHeadroom: must be 1-100"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := quotaMesh(tt.q...)
			m.Options = tt.o
			_, err := Translate(m)
			if err == nil {
				t.Fatal("translated an invalid mesh")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
