package extauthz

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/extauthz/audit"
)

// TestAuditFileConcurrentChecks: concurrent Checks over gRPC with a real
// audit logger writing a file: the log verifies, and it holds exactly one
// record per Check, of the kind its outcome says, with violation paths
// (never their messages).
func TestAuditFileConcurrentChecks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	log, err := audit.New(audit.Config{Sinks: []audit.SinkConfig{{Type: "file", Path: path}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	logCtx, stopLog := context.WithCancel(ctx)
	logDone := make(chan error, 1)
	go func() { logDone <- log.Run(logCtx) }()
	for log.Ready() != nil {
		if ctx.Err() != nil {
			t.Fatal("audit logger never ready")
		}
		time.Sleep(5 * time.Millisecond)
	}

	srvCfg, pol := quickstartPolicy(t)
	srvCfg.Address = "127.0.0.1:0"
	s := newServer(t, srvCfg, newStore(t, pol, quickstartOptions(pol)), Options{Auditor: log})
	ac := authv3.NewAuthorizationClient(dial(t, startServer(t, s), nil))

	files := []string{"allow.json", "deny_abac.json", "deny_schema.json", "allow_get.json", "unauthenticated"}
	const workers, perWorker = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				file := files[(w+i)%len(files)]
				var req *authv3.CheckRequest
				if file == "unauthenticated" {
					req = loadRefRequest(t, "allow_get.json")
					req.Attributes.Source.Principal = ""
				} else {
					req = loadRefRequest(t, file)
				}
				if _, err := ac.Check(ctx, req); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	stopLog()
	if err := <-logDone; err != nil {
		t.Fatalf("audit Run = %v", err)
	}

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum, err := audit.Verify(f)
	if err != nil {
		t.Fatalf("audit verify: %v %v", err, sum.Problems)
	}
	const n = workers * perWorker
	per := n / len(files)
	want := map[string]int{audit.KindDecision: 2 * per, audit.KindAuthzDenial: 2 * per, audit.KindAuthnFailure: per}
	if sum.Records != n {
		t.Errorf("%d records for %d Checks", sum.Records, n)
	}
	for k, c := range want {
		if sum.Kinds[k] != c {
			t.Errorf("kind %s: %d records, want %d (kinds %v)", k, sum.Kinds[k], c, sum.Kinds)
		}
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if audit.IsMetaLine(sc.Bytes()) { // segment header or seal
			continue
		}
		if strings.Contains(sc.Text(), "12 > 9") {
			t.Errorf("a violation message reached the audit log: %s", sc.Text())
		}
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if ids[r.DecisionID] || r.DecisionID == "" {
			t.Errorf("decision id %q missing or repeated", r.DecisionID)
		}
		ids[r.DecisionID] = true
		if r.Method == "" || r.Path == "" || r.PolicyRevision == "" || r.Status == 0 || r.RequestID == "" || r.Time.IsZero() {
			t.Errorf("incomplete record %s", sc.Text())
		}
		if r.Reason == "schema_violation" && (len(r.Violations) != 1 || r.Violations[0] != "/task/priority") {
			t.Errorf("schema deny record violations %v, want [/task/priority]", r.Violations)
		}
	}
}
