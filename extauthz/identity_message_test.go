package extauthz

import (
	"encoding/json"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/policy"
)

// TestInvalidIdentityMessage: a 401 for an identity meshward does not
// accept names the identity seen and the trust domain expected.
func TestInvalidIdentityMessage(t *testing.T) {
	s := newServer(t, plainConfig(), newStore(t, testPolicy(), policy.Options{}), Options{})
	long := "spiffe://evil.local/" + strings.Repeat("x", 2*maxSeenIdentity)
	tests := []struct {
		name      string
		principal string
		cert      string
		want      []string
		notWant   string
	}{
		{name: "other trust domain", principal: "spiffe://evil.local/ns/default/sa/viewer",
			want: []string{`peer identity "spiffe://evil.local/ns/default/sa/viewer"`, `trust domain "mesh.local"`}},
		{name: "not a SPIFFE ID", principal: "CN=viewer", want: []string{`"CN=viewer"`, `trust domain "mesh.local"`}},
		{name: "long identity cut", principal: long, want: []string{`"... is not`, `trust domain "mesh.local"`}, notWant: strings.Repeat("x", maxSeenIdentity+1)},
		{name: "certificate disagrees with principal", principal: spiffe("planner"),
			cert: makeCert(t, certSpec{uris: []string{spiffe("viewer")}, ekus: clientEKU}),
			want: []string{`"` + spiffe("viewer") + `" does not match source.principal "` + spiffe("planner") + `"`, `"mesh.local"`}},
		{name: "certificate in other trust domain", cert: makeCert(t, certSpec{uris: []string{"spiffe://evil.local/ns/default/sa/viewer"}, ekus: clientEKU}),
			want: []string{"not an X.509-SVID", `trust domain "mesh.local"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := checkReq(tt.principal, "GET", "/v1/tasks", nil)
			req.Attributes.Source = &authv3.AttributeContext_Peer{Principal: tt.principal, Certificate: tt.cert}
			resp, err := s.Check(testCtx(t), req)
			if err != nil {
				t.Fatal(err)
			}
			if got := httpStatus(t, resp); got != 401 {
				t.Fatalf("status = %d, want 401", got)
			}
			var b denyBody
			if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &b); err != nil {
				t.Fatal(err)
			}
			if b.Error != ReasonInvalidIdentity {
				t.Errorf("error = %q, want %q", b.Error, ReasonInvalidIdentity)
			}
			for _, w := range tt.want {
				if !strings.Contains(b.Message, w) {
					t.Errorf("message %q does not contain %q", b.Message, w)
				}
			}
			if tt.notWant != "" && strings.Contains(b.Message, tt.notWant) {
				t.Errorf("message repeats more than %d bytes of the identity", maxSeenIdentity)
			}
		})
	}
}

// TestIdentityAcceptedAllocatesNothing: naming the identity in the deny
// message must not cost the allow path an allocation.
func TestIdentityAcceptedAllocatesNothing(t *testing.T) {
	s := newServer(t, plainConfig(), newStore(t, testPolicy(), policy.Options{}), Options{})
	cert := makeCert(t, certSpec{uris: []string{spiffe("viewer")}, ekus: clientEKU})
	for name, src := range map[string]*authv3.AttributeContext_Peer{
		"principal":               {Principal: spiffe("viewer")},
		"certificate (cached)":    {Certificate: cert},
		"certificate + principal": {Principal: spiffe("viewer"), Certificate: cert},
	} {
		if _, rej := s.identity(src); rej != nil { // fills the certificate cache
			t.Fatalf("%s: rejected: %s", name, rej.msg)
		}
		if n := testing.AllocsPerRun(100, func() { _, _ = s.identity(src) }); n != 0 {
			t.Errorf("%s: identity allocates %v times per accepted call, want 0", name, n)
		}
	}
}
