package extauthz

import (
	"net/http"
	"sync"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshward/meshward/extauthz/audit"
	"github.com/meshward/meshward/policy"
)

// toDest sets the request's destination principal.
func toDest(r *authv3.CheckRequest, principal string) *authv3.CheckRequest {
	r.Attributes.Destination = &authv3.AttributeContext_Peer{Principal: principal}
	return r
}

// TestQuarantine: a Check from or to a quarantined identity is denied 403
// quarantined before policy (dry-run included), audited and counted as a
// deny; others are decided as before, and releasing applies in one step.
func TestQuarantine(t *testing.T) {
	for _, dry := range []bool{false, true} {
		cfg := plainConfig()
		cfg.DryRun = dry
		a := &recordingAuditor{}
		s := newServer(t, cfg, newStore(t, testPolicy(), policy.Options{}), Options{Auditor: a})
		s.SetQuarantine(NewQuarantine([]string{spiffe("planner"), spiffe("executor")}))
		for _, c := range []struct {
			name   string
			req    *authv3.CheckRequest
			status int // 0: allowed
		}{
			{"quarantined caller", checkReq(spiffe("planner"), "GET", "/v1/tasks", nil), http.StatusForbidden},
			{"quarantined destination", toDest(checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil), spiffe("executor")), http.StatusForbidden},
			{"neither", toDest(checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil), spiffe("other")), 0},
		} {
			a.recs = nil
			resp, err := s.Check(testCtx(t), c.req)
			if err != nil {
				t.Fatalf("dry=%v %s: Check: %v", dry, c.name, err)
			}
			dr := resp.GetDeniedResponse()
			if c.status == 0 {
				if dr != nil {
					t.Errorf("dry=%v %s: denied %d %s", dry, c.name, dr.GetStatus().GetCode(), dr.GetBody())
				}
				continue
			}
			if dr == nil || int(dr.GetStatus().GetCode()) != c.status {
				t.Fatalf("dry=%v %s: response %v, want a %d", dry, c.name, resp, c.status)
			}
			if len(a.recs) != 1 || a.recs[0].Reason != ReasonQuarantined || a.recs[0].Kind != audit.KindAuthzDenial || a.recs[0].Status != c.status {
				t.Errorf("dry=%v %s: audit records %+v, want one authz_denial with reason %q", dry, c.name, a.recs, ReasonQuarantined)
			}
		}
		if got := testutil.ToFloat64(s.m.decisions.WithLabelValues(resultDeny, ReasonQuarantined)); got != 2 {
			t.Errorf("dry=%v: deny/quarantined counted %v, want 2", dry, got)
		}
		s.SetQuarantine(nil)
		resp, err := s.Check(testCtx(t), checkReq(spiffe("planner"), "GET", "/v1/tasks", nil))
		if err != nil || resp.GetDeniedResponse() != nil {
			t.Errorf("dry=%v: after release: %v %v, want allowed", dry, resp, err)
		}
		// Input, as `meshward check` uses it, refuses the same way.
		s.SetQuarantine(NewQuarantine([]string{spiffe("planner")}))
		if _, d, ok := s.Input(checkReq(spiffe("planner"), "GET", "/v1/tasks", nil)); ok || d.Reason != ReasonQuarantined || d.Status != http.StatusForbidden {
			t.Errorf("dry=%v: Input of a quarantined caller: ok=%v %+v", dry, ok, d)
		}
	}
}

// TestQuarantineNoAllocs: the quarantine check of a caller that is not
// quarantined allocates nothing, with and without a set.
func TestQuarantineNoAllocs(t *testing.T) {
	s := newServer(t, plainConfig(), newStore(t, testPolicy(), policy.Options{}), Options{})
	in := &policy.Input{Principal: spiffe("viewer"), Request: toDest(checkReq(spiffe("viewer"), "GET", "/", nil), spiffe("planner"))}
	for _, q := range []*Quarantine{nil, NewQuarantine([]string{spiffe("x"), spiffe("y")})} {
		s.SetQuarantine(q)
		if n := testing.AllocsPerRun(100, func() { _ = s.quarantined(in) }); n != 0 {
			t.Errorf("quarantine check of %d ids: %v allocations, want 0", q.Len(), n)
		}
	}
}

// TestQuarantineInFlight: while Checks run concurrently, every Check that
// starts after SetQuarantine returns is denied, and every one after the
// release is allowed (run with -race).
func TestQuarantineInFlight(t *testing.T) {
	s := newServer(t, plainConfig(), newStore(t, testPolicy(), policy.Options{}), Options{})
	req := checkReq(spiffe("planner"), "GET", "/v1/tasks", nil)
	ctx := testCtx(t)
	q := NewQuarantine([]string{spiffe("planner")})
	for round := range 20 {
		stop := make(chan struct{})
		errs := make(chan string, 4)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := s.Check(ctx, req); err != nil {
						errs <- err.Error()
						return
					}
				}
			})
		}
		quarantine := round%2 == 0
		if quarantine {
			s.SetQuarantine(q)
		} else {
			s.SetQuarantine(nil)
		}
		resp, err := s.Check(ctx, req)
		close(stop)
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Fatalf("round %d: concurrent Check: %s", round, e)
		}
		if err != nil {
			t.Fatal(err)
		}
		if denied := resp.GetDeniedResponse() != nil; denied != quarantine {
			t.Fatalf("round %d: quarantined %v but denied %v", round, quarantine, denied)
		}
	}
}
