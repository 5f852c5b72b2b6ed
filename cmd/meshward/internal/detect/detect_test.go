package detect

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/extauthz/audit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	planner = "spiffe://mesh.local/ns/default/sa/planner"
	coder   = "spiffe://mesh.local/ns/default/sa/coder"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// fakeEvents records the events it is given.
type fakeEvents struct {
	mu  sync.Mutex
	got []map[string]string
	msg []string
	ch  chan struct{}
}

func (f *fakeEvents) Event(kind, message string, fields map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if kind != audit.KindDetection {
		return errors.New("wrong kind " + kind)
	}
	f.got = append(f.got, fields)
	f.msg = append(f.msg, message)
	if f.ch != nil {
		f.ch <- struct{}{}
	}
	return nil
}

func deny(id string, at time.Time) *audit.Record {
	return &audit.Record{Kind: audit.KindAuthzDenial, Principal: id, Decision: "deny", Reason: "missing_role", Status: 403, Time: at}
}

func authn(id string, at time.Time) *audit.Record {
	return &audit.Record{Kind: audit.KindAuthnFailure, Principal: id, Decision: "deny", Reason: "invalid_identity", Status: 401, Time: at}
}

func schemaDeny(id string, at time.Time) *audit.Record {
	r := deny(id, at)
	r.Reason, r.Status, r.Violations = "schema_invalid", 400, []string{"/amount"}
	return r
}

// feed taps each record and counts what was queued, as Run would, on
// this goroutine.
func feed(d *Detector, recs ...*audit.Record) {
	for _, r := range recs {
		d.Tap(r)
		for len(d.in) > 0 {
			d.observe(<-d.in)
		}
	}
}

func newDetector(t *testing.T, cfg Config, opts ...Option) (*Detector, *fakeEvents) {
	t.Helper()
	ev := &fakeEvents{}
	d, err := New(cfg, append([]Option{WithEvents(ev)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return d, ev
}

func mkRule(match string, threshold int, window time.Duration, wt string) Rule {
	return Rule{Name: "r", Match: match, Threshold: threshold, Window: audit.Duration(window), WindowType: wt}
}

// every returns n records made by mk for id, step apart from start.
func every(n int, start time.Time, step time.Duration, mk func(string, time.Time) *audit.Record, id string) []*audit.Record {
	out := make([]*audit.Record, n)
	for i := range out {
		out[i] = mk(id, start.Add(time.Duration(i)*step))
	}
	return out
}

func TestThresholds(t *testing.T) {
	minute := time.Minute
	cases := []struct {
		name  string
		rule  Rule
		recs  []*audit.Record
		fires int
	}{
		{"sliding: threshold reached", mkRule(MatchDenies, 5, minute, WindowSliding), every(5, t0, time.Second, deny, planner), 1},
		{"sliding: one short", mkRule(MatchDenies, 5, minute, WindowSliding), every(4, t0, time.Second, deny, planner), 0},
		{"sliding: spread wider than the window", mkRule(MatchDenies, 5, minute, WindowSliding), every(5, t0, 15*time.Second, deny, planner), 0},
		{"sliding: exactly one window apart is outside", mkRule(MatchDenies, 2, minute, WindowSliding),
			[]*audit.Record{deny(planner, t0), deny(planner, t0.Add(minute))}, 0},
		{"sliding: just inside the window", mkRule(MatchDenies, 2, minute, WindowSliding),
			[]*audit.Record{deny(planner, t0), deny(planner, t0.Add(minute-time.Nanosecond))}, 1},
		{"sliding: counting restarts after firing", mkRule(MatchDenies, 3, minute, WindowSliding), every(8, t0, time.Second, deny, planner), 2},
		{"per identity: two identities do not add up", mkRule(MatchDenies, 4, minute, WindowSliding),
			append(every(3, t0, time.Second, deny, planner), every(3, t0, time.Second, deny, coder)...), 0},
		{"fixed: within one window", mkRule(MatchDenies, 3, minute, WindowFixed), every(3, t0, time.Second, deny, planner), 1},
		{"fixed: across a boundary does not add up", mkRule(MatchDenies, 3, minute, WindowFixed),
			[]*audit.Record{deny(planner, t0.Add(58*time.Second)), deny(planner, t0.Add(59*time.Second)), deny(planner, t0.Add(61*time.Second))}, 0},
		{"authnFailures: denies by policy not counted", mkRule(MatchAuthnFailures, 2, minute, WindowSliding),
			[]*audit.Record{deny(planner, t0), deny(planner, t0), authn(planner, t0)}, 0},
		{"authnFailures: counted", mkRule(MatchAuthnFailures, 2, minute, WindowSliding), every(2, t0, time.Second, authn, planner), 1},
		{"schemaViolations: other denies not counted", mkRule(MatchSchemaViolations, 2, minute, WindowSliding),
			[]*audit.Record{deny(planner, t0), schemaDeny(planner, t0), authn(planner, t0)}, 0},
		{"schemaViolations: counted", mkRule(MatchSchemaViolations, 2, minute, WindowSliding), every(2, t0, time.Second, schemaDeny, planner), 1},
		{"denies: every kind of deny counted", mkRule(MatchDenies, 3, minute, WindowSliding),
			[]*audit.Record{deny(planner, t0), authn(planner, t0), schemaDeny(planner, t0)}, 1},
		{"allows, errors, quarantine denies and no principal not counted", mkRule(MatchDenies, 1, minute, WindowSliding),
			[]*audit.Record{
				{Kind: audit.KindDecision, Principal: planner, Decision: "allow", Status: 200, Time: t0},
				{Kind: audit.KindDecision, Principal: planner, Decision: "error", Reason: "internal_error", Time: t0},
				{Kind: audit.KindAuthzDenial, Principal: planner, Decision: "deny", Reason: "quarantined", Time: t0},
				{Kind: audit.KindAuthnFailure, Decision: "deny", Reason: "missing_identity", Time: t0},
				{Kind: audit.KindAgentQuarantined, Principal: planner, Time: t0},
			}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, ev := newDetector(t, Config{Rules: []Rule{tc.rule}})
			feed(d, tc.recs...)
			if len(ev.got) != tc.fires {
				t.Fatalf("fired %d times, want %d: %v", len(ev.got), tc.fires, ev.msg)
			}
			if got := testutil.ToFloat64(d.m.fired.WithLabelValues("r", ActionAlert)); got != float64(tc.fires) {
				t.Errorf("meshward_detections_total{rule=r,action=alert} = %v, want %d", got, tc.fires)
			}
			for _, e := range ev.got {
				if e["action"] != ActionAlert || e["rule"] != "r" || e["spiffe_id"] == "" || e["threshold"] == "" {
					t.Errorf("event detail %v", e)
				}
			}
		})
	}
}

// TestWindowExpiry moves the records' clock past the window: the old
// denies stop counting and the identity is forgotten.
func TestWindowExpiry(t *testing.T) {
	d, ev := newDetector(t, Config{Rules: []Rule{mkRule(MatchDenies, 3, time.Minute, WindowSliding)}})
	feed(d, deny(planner, t0), deny(planner, t0.Add(time.Second)))
	if d.lru.Len() != 1 {
		t.Fatalf("tracking %d identities, want 1", d.lru.Len())
	}
	later := t0.Add(2 * time.Minute)
	feed(d, deny(coder, later)) // moves the clock: planner's counts expired
	if _, ok := d.ids[planner]; ok {
		t.Error("planner still tracked two windows after its last deny")
	}
	feed(d, deny(planner, later), deny(planner, later.Add(time.Second)))
	if len(ev.got) != 0 {
		t.Fatalf("fired on denies two windows apart: %v", ev.msg)
	}
	feed(d, deny(planner, later.Add(2*time.Second)))
	if len(ev.got) != 1 || ev.got[0]["count"] != "3" {
		t.Fatalf("events %v, want one with count 3", ev.got)
	}
}

// TestMaxIdentities: the table never holds more than maxIdentities, the
// least recently seen goes first and is counted.
func TestMaxIdentities(t *testing.T) {
	reg := prometheus.NewRegistry()
	d, ev := newDetector(t, Config{MaxIdentities: 2, Rules: []Rule{mkRule(MatchDenies, 2, time.Hour, WindowSliding)}}, WithRegisterer(reg))
	a, b, c := planner, coder, "spiffe://mesh.local/ns/default/sa/critic"
	feed(d, deny(a, t0), deny(b, t0), deny(c, t0)) // a evicted
	if d.lru.Len() != 2 {
		t.Fatalf("tracking %d, want 2", d.lru.Len())
	}
	if got := testutil.ToFloat64(d.m.evicted); got != 1 {
		t.Errorf("evicted %v, want 1", got)
	}
	feed(d, deny(a, t0)) // a starts from zero; b evicted
	if len(ev.got) != 0 {
		t.Fatalf("an evicted identity's count survived: %v", ev.msg)
	}
	feed(d, deny(c, t0)) // c kept its count
	if len(ev.got) != 1 || ev.got[0]["spiffe_id"] != c {
		t.Fatalf("events %v, want one for %s", ev.got, c)
	}
	if n, err := testutil.GatherAndCount(reg, "meshward_detection_tracked_identities"); err != nil || n != 1 {
		t.Errorf("tracked identities gauge: %d series, %v", n, err)
	}
}

// TestQuarantineModes: off only alerts, dryRun says it would quarantine
// and does not, enforce quarantines through the state file (persisted,
// by "detector"), and a second crossing finds it already quarantined.
func TestQuarantineModes(t *testing.T) {
	for _, mode := range []string{QuarantineOff, QuarantineDryRun, QuarantineEnforce} {
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "quarantine.json")
			q := StateFile(path, func(id string) error {
				if !strings.HasPrefix(id, "spiffe://mesh.local/") {
					return errors.New("not of the trust domain")
				}
				return nil
			}, func() time.Time { return t0 })
			r := mkRule(MatchDenies, 2, time.Minute, WindowSliding)
			r.Name, r.Quarantine = "deny-burst", mode
			reg := prometheus.NewRegistry()
			d, ev := newDetector(t, Config{Rules: []Rule{r}}, WithQuarantiner(q), WithRegisterer(reg))
			for _, a := range actions(mode) { // exported at 0 before anything fires
				if got := testutil.ToFloat64(d.m.fired.WithLabelValues("deny-burst", a)); got != 0 {
					t.Errorf("%s = %v before any record", a, got)
				}
			}
			if n, _ := testutil.GatherAndCount(reg, "meshward_detections_total"); n != len(actions(mode)) {
				t.Errorf("meshward_detections_total has %d series at start, want %d", n, len(actions(mode)))
			}
			feed(d, every(2, t0, time.Second, deny, planner)...)
			if len(ev.got) != 1 {
				t.Fatalf("events %v", ev.msg)
			}
			st, err := quarantine.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			e, quarantined := st.Find(planner)
			want := map[string]string{QuarantineOff: ActionAlert, QuarantineDryRun: ActionWouldQuarantine, QuarantineEnforce: ActionQuarantined}[mode]
			if got := ev.got[0]["action"]; got != want {
				t.Errorf("action %q, want %q", got, want)
			}
			if quarantined != (mode == QuarantineEnforce) {
				t.Fatalf("quarantined = %v in %s mode", quarantined, mode)
			}
			switch mode {
			case QuarantineDryRun:
				if !strings.Contains(ev.msg[0], "would quarantine") {
					t.Errorf("dry-run message %q does not say it would quarantine", ev.msg[0])
				}
			case QuarantineEnforce:
				if e.By != By || !strings.Contains(e.Reason, "deny-burst") || !e.At.Equal(t0) {
					t.Errorf("state entry %+v", e)
				}
				feed(d, every(2, t0.Add(10*time.Second), time.Second, deny, planner)...)
				if len(ev.got) != 2 || ev.got[1]["action"] != ActionAlreadyQuarantined {
					t.Errorf("second crossing: %v", ev.got)
				}
			}
			if got := testutil.ToFloat64(d.m.fired.WithLabelValues("deny-burst", want)); got != 1 {
				t.Errorf("meshward_detections_total{action=%s} = %v, want 1", want, got)
			}
		})
	}
}

// TestQuarantineRefused: an identity the quarantiner refuses, or no
// quarantiner, is an event with action quarantine_failed, never silence.
func TestQuarantineRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "quarantine.json")
	q := StateFile(path, func(string) error { return errors.New("meshward's own identity") }, time.Now)
	r := mkRule(MatchDenies, 1, time.Minute, WindowSliding)
	r.Quarantine = QuarantineEnforce
	for name, opts := range map[string][]Option{"refused": {WithQuarantiner(q)}, "no quarantiner": nil} {
		t.Run(name, func(t *testing.T) {
			d, ev := newDetector(t, Config{Rules: []Rule{r}}, opts...)
			feed(d, deny(planner, t0))
			if len(ev.got) != 1 || ev.got[0]["action"] != ActionQuarantineFailed || ev.got[0]["error"] == "" {
				t.Fatalf("events %v", ev.got)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state file written for a refused identity: %v", err)
			}
		})
	}
}

// TestQueueFull: Tap never blocks; what does not fit is counted.
func TestQueueFull(t *testing.T) {
	d, _ := newDetector(t, Config{QueueSize: 2, Rules: []Rule{mkRule(MatchDenies, 1, time.Minute, WindowSliding)}})
	for range 5 {
		d.Tap(deny(planner, t0))
	}
	if got := testutil.ToFloat64(d.m.dropped); got != 3 {
		t.Errorf("dropped %v, want 3", got)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Rule{Name: "deny-burst", Match: MatchDenies, Threshold: 20, Window: audit.Duration(time.Minute)}
	cases := []struct {
		name string
		cfg  Config
		want []string // substrings; none: valid
	}{
		{"valid", Config{Rules: []Rule{ok}}, nil},
		{"empty", Config{}, nil},
		{"bad fields", Config{MaxIdentities: -1, QueueSize: MaxQueueSize + 1, Rules: []Rule{{Name: "Bad Name", Match: "allows", Threshold: 0, Window: audit.Duration(time.Millisecond), WindowType: "tumbling", Quarantine: "yes"}}},
			[]string{"detection.maxIdentities", "detection.queueSize", "detection.rules[0].name", "detection.rules[0].match", "detection.rules[0].threshold", "detection.rules[0].window", "detection.rules[0].windowType", "detection.rules[0].quarantine"}},
		{"duplicate name", Config{Rules: []Rule{ok, ok}}, []string{`detection.rules[1].name: "deny-burst" is also rules[0]`}},
		{"window too long", Config{Rules: []Rule{{Name: "a", Match: MatchDenies, Threshold: 1, Window: audit.Duration(25 * time.Hour)}}}, []string{"detection.rules[0].window"}},
		{"sliding memory bound", Config{MaxIdentities: MaxMaxIdentities, Rules: []Rule{{Name: "a", Match: MatchDenies, Threshold: MaxThreshold, Window: audit.Duration(time.Hour)}}}, []string{"MiB of timestamps"}},
		{"fixed windows hold no timestamps", Config{MaxIdentities: MaxMaxIdentities, Rules: []Rule{{Name: "a", Match: MatchDenies, Threshold: MaxThreshold, Window: audit.Duration(time.Hour), WindowType: WindowFixed}}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.SetDefaults()
			err := c.Validate("detection")
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("valid")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestThroughAuditLogger runs the detector on a real audit logger: the
// logger's writer taps it, Run counts on its own goroutine, and the
// detection event is written to the same file as the denies that raised
// it. The logger's clock is injected; nothing sleeps.
func TestThroughAuditLogger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "audit.log")
	var mu sync.Mutex
	now := t0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := mkRule(MatchDenies, 3, time.Minute, WindowSliding)
	r.Name, r.Quarantine = "deny-burst", QuarantineDryRun
	d, err := New(Config{Rules: []Rule{r}})
	if err != nil {
		t.Fatal(err)
	}
	al, err := audit.New(audit.Config{Sinks: []audit.SinkConfig{{Type: "file", Path: path, Fsync: audit.FsyncNever}}},
		audit.WithHMACKey(bytes.Repeat([]byte("k"), 32)), audit.WithClock(clock), audit.WithTap(d.Tap))
	if err != nil {
		t.Fatal(err)
	}
	d.events = al
	actx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = al.Run(actx) })
	wg.Go(func() { _ = d.Run(actx) })
	defer func() { stop(); wg.Wait() }()
	for al.Ready() != nil {
		if ctx.Err() != nil {
			t.Fatal("audit logger never ready")
		}
		time.Sleep(time.Millisecond) // polling for start, not timing
	}
	for i := range 3 {
		mu.Lock()
		now = t0.Add(time.Duration(i) * 10 * time.Second)
		mu.Unlock()
		if err := al.Audit(&audit.Record{Kind: audit.KindAuthzDenial, Principal: planner, Decision: "deny", Reason: "missing_role", Status: 403}); err != nil {
			t.Fatal(err)
		}
	}
	// Wait (bounded by ctx) until the detector has fired; its event is
	// then queued, and stopping the logger writes what is queued.
	for testutil.ToFloat64(d.m.fired.WithLabelValues("deny-burst", ActionWouldQuarantine)) < 1 {
		if ctx.Err() != nil {
			t.Fatal("the detector never fired")
		}
		time.Sleep(time.Millisecond) // polling, not timing
	}
	stop()
	wg.Wait()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	denies, detections := 0, 0
	for sc.Scan() {
		if audit.IsMetaLine(sc.Bytes()) {
			continue
		}
		var rec audit.Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		switch rec.Kind {
		case audit.KindAuthzDenial:
			denies++
		case audit.KindDetection:
			detections++
			if rec.Detail["action"] != ActionWouldQuarantine || rec.Detail["spiffe_id"] != planner || !strings.Contains(rec.Message, "would quarantine") {
				t.Errorf("detection record %+v", rec)
			}
		}
	}
	if denies != 3 || detections != 1 {
		t.Fatalf("file has %d denies and %d detections, want 3 and 1", denies, detections)
	}
}
