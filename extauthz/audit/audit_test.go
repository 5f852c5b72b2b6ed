package audit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func mac(s string) string {
	m := hmac.New(sha256.New, testKey)
	m.Write([]byte(s))
	return HMACPrefix + hex.EncodeToString(m.Sum(nil))
}

// TestRedactionPlantedSecrets plants credentials and configured values in
// every field that can carry them and searches the whole file for them.
func TestRedactionPlantedSecrets(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	pemBody := strings.Split(pemKey, "\n")[1] // a line of base64 key material
	const (
		vaultToken  = "hvs.CAESIJ3kq9Vt2xYzQ8rW5nLmP0aBcDeFgHiJkLmNoPqRsTuV"
		legacyToken = "s.Zx8Qw3Er5Ty7Ui9Op1As2Df4"
		jwt         = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVlLWhlcmU"
		apiKey      = "sk-live-4f9a8b7c6d5e4f3a2b1c"
		email       = "alice@example.org"
		ssn         = "123-45-6789"
		patient     = "patient-8842-xyz"
		cookieVal   = "session=s3cr3t-c00kie-value"
	)
	planted := map[string]string{
		"pem key line": pemBody, "vault token": vaultToken, "legacy vault token": legacyToken,
		"jwt": jwt, "injected api key": apiKey, "email claim": email, "ssn body path": ssn,
		"patient header": patient, "cookie": cookieVal, "query secret": "qsecret-991",
		"detail named token": "opaque-token-value-1", "detail named secret": "opaque-secret-2",
		"header named session token": "opaque-session-3", "claim named token": "opaque-refresh-4",
	}
	path := tempLog(t)
	cfg := fileConfig(path)
	cfg.IncludeBody = true
	cfg.Redaction = Redaction{
		Headers:   []string{"X-Patient-ID"},
		BodyPaths: []string{"/patient/ssn", "/items/1"},
		Claims:    []string{"email", "sub"},
	}
	l := start(t, cfg)
	recs := []*Record{
		{Kind: KindDecision, Principal: "spiffe://mesh.local/agent/a", Subject: "alice", Decision: "allow",
			Path: "/v1/tasks?token=qsecret-991", Query: "token=qsecret-991",
			Headers: map[string]string{
				"authorization": "Bearer " + jwt,
				"x-api-key":     apiKey,
				"Cookie":        cookieVal,
				"x-patient-id":  patient,
				"x-debug":       "upstream said token " + vaultToken,
				"x-upstream":    "Basic " + "YWxhZGRpbjpvcGVuc2VzYW1l",
			},
			Claims: map[string]any{"email": email, "note": "key " + pemKey, "nested": map[string]any{"t": []any{vaultToken}}},
			Body: map[string]any{"patient": map[string]any{"ssn": ssn, "name": "ok-name"},
				"items": []any{"keep-0", "drop-" + ssn}, "memo": "auth: Bearer " + jwt},
		},
		{Kind: KindVaultAuthFailure, Message: "vault login failed: token " + vaultToken + " revoked",
			Detail: map[string]string{"key": pemKey, "legacy": legacyToken, "cred": "password=" + apiKey}},
		{Kind: KindCertIssueFailure, Message: "issued key:\n" + pemKey},
		{Kind: KindVaultAuthFailure, Detail: map[string]string{"vault_token": "opaque-token-value-1", "client_secret": "opaque-secret-2"},
			Headers: map[string]string{"x-session-token": "opaque-session-3"}, Claims: map[string]any{"refresh_token": "opaque-refresh-4"}},
	}
	for _, r := range recs {
		if err := l.Audit(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Event(KindXDSNack, "nack from node", map[string]string{"authorization": "Bearer " + jwt}); err != nil {
		t.Fatal(err)
	}
	if err := l.stop(); err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range planted {
		t.Run(name, func(t *testing.T) {
			if bytes.Contains(out, []byte(v)) {
				t.Errorf("planted %s %q found in the audit file", name, v)
			}
		})
	}
	for _, bad := range []string{"PRIVATE KEY", "Bearer", "Basic YWxh"} {
		if bytes.Contains(out, []byte(bad)) {
			t.Errorf("%q found in the audit file:\n%s", bad, out)
		}
	}
	// Configured values are written as their HMAC, so they can be matched.
	for _, want := range []string{mac(email), mac(patient), mac(ssn), mac("alice"), mac("drop-" + ssn), `"name":"ok-name"`, `"keep-0"`, `"path":"/v1/tasks"`} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("%s not found in the audit file:\n%s", want, out)
		}
	}
	if s, err := Verify(bytes.NewReader(out)); err != nil {
		t.Errorf("Verify: %v %v", err, s.Problems)
	}
}

// TestEscaping checks that no record can break a line or hide text from a
// terminal: control characters and U+2028/U+2029 are escaped.
func TestEscaping(t *testing.T) {
	w := &flakyWriter{}
	l := start(t, Config{}, WithStdout(w))
	evil := "a\nb\rc\x00d\x1be[31m\u2028e\u2029f\u0085g\xffh"
	if err := l.Audit(&Record{Kind: KindDecision, Path: "/" + evil, Reason: evil, Headers: map[string]string{"x": evil}}); err != nil {
		t.Fatal(err)
	}
	l.stop()
	b := w.bytes()
	if n := bytes.Count(b, []byte("\n")); n != 1 {
		t.Fatalf("%d newlines, want 1: %q", n, b)
	}
	for _, c := range []string{"\r", "\x00", "\x1b", "\u2028", "\u2029", "\xff"} {
		if bytes.Contains(b[:len(b)-1], []byte(c)) {
			t.Errorf("raw %q in output %q", c, b)
		}
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rec.Reason, "\u2028e\u2029f") {
		t.Errorf("reason %q lost the escaped characters", rec.Reason)
	}
}

// TestFailClosed covers sinks that cannot be opened or written.
func TestFailClosed(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f := false
	tests := []struct {
		name       string
		path       string
		failOpen   bool
		wantRunErr bool
		wantAudit  error // of the Audit after the sink failed
	}{
		{name: "parent is a regular file: Run fails, Audit refused", path: filepath.Join(notDir, "audit.log"), wantRunErr: true, wantAudit: ErrClosed},
		{name: "writes fail (ENOSPC): unhealthy, Audit refused", path: "/dev/full", wantAudit: ErrUnhealthy},
		{name: "writes fail, failClosed false: loss counted, Audit accepted", path: "/dev/full", failOpen: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			cfg := fileConfig(tc.path)
			cfg.QueueSize = 4
			if tc.failOpen {
				cfg.FailClosed = &f
			}
			l := start(t, cfg, WithRegisterer(reg))
			if tc.wantRunErr {
				<-l.done
				l.done <- nil
				if err := l.Ready(); err == nil {
					t.Fatal("Ready() = nil after Run failed")
				}
			} else {
				l.waitReady(t, nil)
				if err := l.Audit(decision(1)); err != nil {
					t.Fatalf("first Audit: %v", err)
				}
				if !tc.failOpen {
					l.waitReady(t, ErrUnhealthy)
				}
			}
			sink := "file:" + tc.path
			if tc.failOpen {
				// Without failClosed, every Audit is accepted; the failing
				// sink holds QueueSize records, then drops and counts.
				for i := range 20 {
					if err := l.Audit(decision(i)); err != nil {
						t.Fatalf("Audit %d: %v", i, err)
					}
				}
				l.stop()
				lost := metricValue(t, reg, "meshward_audit_records_lost_total", "reason", LostSinkFailed) +
					metricValue(t, reg, "meshward_audit_records_lost_total", "reason", LostShutdown) +
					metricValue(t, reg, "meshward_audit_records_lost_total", "reason", LostQueueFull)
				if lost != 21 {
					t.Errorf("records lost = %v, want 21", lost)
				}
				if n := metricValue(t, reg, "meshward_audit_sink_errors_total", "sink", sink); n == 0 {
					t.Error("no sink error counted")
				}
				return
			}
			if err := l.Audit(decision(2)); !errors.Is(err, tc.wantAudit) {
				t.Fatalf("Audit = %v, want %v", err, tc.wantAudit)
			}
			if n := metricValue(t, reg, "meshward_audit_sink_errors_total", "sink", sink); n == 0 {
				t.Error("no sink error counted")
			}
			reason := LostUnhealthy
			if tc.wantRunErr {
				reason = LostClosed
			} else if h := metricValue(t, reg, "meshward_audit_healthy"); h != 0 {
				t.Errorf("meshward_audit_healthy = %v, want 0", h)
			}
			if n := metricValue(t, reg, "meshward_audit_records_lost_total", "reason", reason); n != 1 {
				t.Errorf("lost{%s} = %v, want 1", reason, n)
			}
		})
	}
}

// TestRecovery: a sink fails, decisions are refused, the sink comes back,
// the held records are written without a gap and Audit accepts again.
func TestRecovery(t *testing.T) {
	w := &flakyWriter{}
	w.failing.Store(true)
	reg := prometheus.NewRegistry()
	l := start(t, Config{}, WithStdout(w), WithRegisterer(reg))
	l.waitReady(t, nil)
	if err := l.Audit(decision(1)); err != nil {
		t.Fatal(err)
	}
	l.waitReady(t, ErrUnhealthy)
	if err := l.Audit(decision(2)); !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("Audit while failing = %v, want ErrUnhealthy", err)
	}
	w.failing.Store(false)
	l.waitReady(t, nil)
	if err := l.Audit(decision(3)); err != nil {
		t.Fatalf("Audit after recovery: %v", err)
	}
	l.stop()
	s, err := Verify(bytes.NewReader(w.bytes()))
	if err != nil {
		t.Fatalf("Verify: %v %v", err, s.Problems)
	}
	if s.Records != 2 {
		t.Errorf("records = %d, want 2 (decision 1 held and retried, decision 3)", s.Records)
	}
	if n := metricValue(t, reg, "meshward_audit_records_written_total", "sink", "stdout"); n != 2 {
		t.Errorf("written = %v, want 2", n)
	}
}

// TestQueueFull fills the queue of a logger that is not running.
func TestQueueFull(t *testing.T) {
	f := false
	tests := []struct {
		name     string
		failOpen bool
		want     error
	}{
		{name: "failClosed: refused", want: ErrQueueFull},
		{name: "failClosed false: accepted and counted", failOpen: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			cfg := Config{QueueSize: 2}
			if tc.failOpen {
				cfg.FailClosed = &f
			}
			l, err := New(cfg, WithRegisterer(reg), WithStdout(&flakyWriter{}))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				if err := l.Audit(decision(i)); err != nil {
					t.Fatal(err)
				}
			}
			if d := metricValue(t, reg, "meshward_audit_queue_depth"); d != 2 {
				t.Errorf("queue depth = %v, want 2", d)
			}
			if err := l.Audit(decision(3)); !errors.Is(err, tc.want) {
				t.Errorf("Audit = %v, want %v", err, tc.want)
			}
			if n := metricValue(t, reg, "meshward_audit_records_lost_total", "reason", LostQueueFull); n != 1 {
				t.Errorf("lost{queue_full} = %v, want 1", n)
			}
			if err := l.Ready(); !errors.Is(err, ErrNotRunning) {
				t.Errorf("Ready = %v, want ErrNotRunning", err)
			}
		})
	}
}

// TestConcurrentProducers: every record Audit accepts is written, and a
// refused one is counted, with many producers at once.
func TestConcurrentProducers(t *testing.T) {
	const producers, each = 8, 500
	tests := []struct {
		name      string
		queueSize int
		wantAll   bool // the queue holds every record: none may be refused
	}{
		{name: "queue holds all: every record written", queueSize: producers * each, wantAll: true},
		{name: "small queue: accepted equals written", queueSize: 16},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tempLog(t)
			reg := prometheus.NewRegistry()
			cfg := fileConfig(path)
			cfg.QueueSize = tc.queueSize
			cfg.BatchSize = 32
			l := start(t, cfg, WithRegisterer(reg))
			var wg sync.WaitGroup
			var mu sync.Mutex
			ok, full := 0, 0
			for p := range producers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						err := l.Audit(decision(p*each + i))
						mu.Lock()
						if err == nil {
							ok++
						} else if errors.Is(err, ErrQueueFull) {
							full++
						} else {
							t.Errorf("Audit: %v", err)
						}
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if err := l.stop(); err != nil {
				t.Fatal(err)
			}
			s, err := VerifyFiles(path)
			if err != nil {
				t.Fatalf("Verify: %v %v", err, s.Problems)
			}
			if s.Records != ok || ok+full != producers*each || (tc.wantAll && full != 0) {
				t.Errorf("records in file = %d, accepted = %d, refused = %d, sent = %d", s.Records, ok, full, producers*each)
			}
			if n := metricValue(t, reg, "meshward_audit_records_written_total", "sink", "file:"+path); int(n) != ok {
				t.Errorf("written metric = %v, want %d", n, ok)
			}
			if n := metricValue(t, reg, "meshward_audit_records_lost_total", "reason", LostQueueFull); int(n) != full {
				t.Errorf("lost metric = %v, want %d", n, full)
			}
		})
	}
}

// TestMetricsMove checks every metric is registered and moves.
func TestMetricsMove(t *testing.T) {
	reg := prometheus.NewRegistry()
	w := &flakyWriter{}
	l := start(t, Config{}, WithRegisterer(reg), WithStdout(w))
	for i := range 5 {
		if err := l.Audit(decision(i)); err != nil {
			t.Fatal(err)
		}
	}
	l.stop()
	if err := l.Audit(decision(9)); !errors.Is(err, ErrClosed) {
		t.Errorf("Audit after Run = %v, want ErrClosed", err)
	}
	if n, err := testutil.GatherAndCount(reg, "meshward_audit_queue_depth", "meshward_audit_healthy",
		"meshward_audit_records_written_total", "meshward_audit_records_lost_total", "meshward_audit_sink_errors_total"); err != nil || n < 5 {
		t.Errorf("GatherAndCount = %d, %v", n, err)
	}
	if n := metricValue(t, reg, "meshward_audit_records_written_total", "sink", "stdout"); n != 5 {
		t.Errorf("written = %v, want 5", n)
	}
	if n := metricValue(t, reg, "meshward_audit_records_lost_total", "reason", LostClosed); n != 1 {
		t.Errorf("lost{closed} = %v, want 1", n)
	}
	if _, err := New(Config{}, WithRegisterer(reg)); err == nil {
		t.Error("a second Logger registered its metrics on the same registry")
	}
}

// TestSeveralSinks: each sink gets every record with its own sequence.
func TestSeveralSinks(t *testing.T) {
	a, b := tempLog(t), filepath.Join(t.TempDir(), "missing", "dirs", "audit.log") // parents are created
	w := &flakyWriter{}
	cfg := Config{Sinks: []SinkConfig{{Type: "file", Path: a}, {Type: "stdout"}, {Type: "file", Path: b}}}
	l := start(t, cfg, WithStdout(w))
	for i := range 50 {
		if err := l.Audit(decision(i)); err != nil {
			t.Fatal(err)
		}
	}
	l.stop()
	for _, got := range []func() ([]byte, error){
		func() ([]byte, error) { return os.ReadFile(a) },
		func() ([]byte, error) { return w.bytes(), nil },
		func() ([]byte, error) { return os.ReadFile(b) },
	} {
		data, err := got()
		if err != nil {
			t.Fatal(err)
		}
		s, err := Verify(bytes.NewReader(data))
		if err != nil || s.Records != 50 || s.Decisions["allow"] != 50 {
			t.Errorf("Verify = %+v, %v", s, err)
		}
	}
	fi, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}
}

// TestKeySources covers where the redaction key comes from.
func TestKeySources(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, append(testKey, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "relative.key"), testKey, 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("tiny"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		red     Redaction
		opts    []Option
		wantNew string
		wantRun string
		wantMAC bool
	}{
		{name: "key file", red: Redaction{KeyFile: keyFile}, wantMAC: true},
		{name: "key file read by WithReadFile", red: Redaction{KeyFile: "relative.key"}, wantMAC: true,
			opts: []Option{WithReadFile(func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, name)) })}},
		{name: "key source", red: Redaction{KeySecret: "audit-key"},
			opts: []Option{WithKeySource(func(context.Context) ([]byte, error) { return testKey, nil })}, wantMAC: true},
		{name: "key source fails: Run fails", red: Redaction{KeySecret: "audit-key"},
			opts: []Option{WithKeySource(func(context.Context) ([]byte, error) { return nil, errors.New("vault sealed") })}, wantRun: "vault sealed"},
		{name: "key secret without a source", red: Redaction{KeySecret: "audit-key"}, wantNew: "no key source"},
		{name: "short key file", red: Redaction{KeyFile: short}, wantNew: "at least 16"},
		{name: "missing key file", red: Redaction{KeyFile: filepath.Join(dir, "nope")}, wantNew: "keyFile"},
		{name: "no key: random, still redacted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &flakyWriter{}
			cfg := Config{Redaction: tc.red}
			l, err := New(cfg, append(tc.opts, WithStdout(w))...)
			if tc.wantNew != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantNew) {
					t.Fatalf("New = %v, want %q", err, tc.wantNew)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			done := make(chan error, 1)
			go func() { done <- l.Run(ctx) }()
			if tc.wantRun != "" {
				err := <-done
				cancel()
				if err == nil || !strings.Contains(err.Error(), tc.wantRun) {
					t.Fatalf("Run = %v, want %q", err, tc.wantRun)
				}
				return
			}
			if err := l.Audit(&Record{Kind: KindDecision, Headers: map[string]string{"authorization": "x-secret-value"}}); err != nil {
				t.Fatal(err)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			out := w.bytes()
			if bytes.Contains(out, []byte("x-secret-value")) || !bytes.Contains(out, []byte(HMACPrefix)) {
				t.Errorf("not redacted: %s", out)
			}
			if got := bytes.Contains(out, []byte(mac("x-secret-value"))); got != tc.wantMAC {
				t.Errorf("HMAC with the configured key present = %v, want %v", got, tc.wantMAC)
			}
		})
	}
}

// TestRunFailsToStart: when a sink cannot be opened, Run fails, records
// queued before are counted as lost, and no sink is written.
func TestRunFailsToStart(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	good := tempLog(t)
	reg := prometheus.NewRegistry()
	l, err := New(Config{Sinks: []SinkConfig{{Type: "file", Path: good}, {Type: "file", Path: filepath.Join(notDir, "x.log")}}},
		WithHMACKey(testKey), WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Audit(decision(1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Run(ctx); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Run = %v, want an open error", err)
	}
	if err := l.Run(ctx); err == nil {
		t.Error("second Run = nil")
	}
	if err := l.Audit(decision(2)); !errors.Is(err, ErrClosed) {
		t.Errorf("Audit after a failed Run = %v, want ErrClosed", err)
	}
	if n := metricValue(t, reg, "meshward_audit_records_lost_total", "reason", LostClosed); n != 2 {
		t.Errorf("lost{closed} = %v, want 2", n)
	}
	if data, err := os.ReadFile(good); err != nil || len(data) != 0 {
		t.Errorf("the sink that opened holds %q (%v), want nothing", data, err)
	}
}

// TestEvents: Event and SecurityEvent write security events with their
// details, credentials redacted.
func TestEvents(t *testing.T) {
	w := &flakyWriter{}
	l := start(t, Config{}, WithStdout(w))
	if err := l.Event(KindPolicyReload, "policy.rego: parse error", map[string]string{"file": "policy.rego"}); err != nil {
		t.Fatal(err)
	}
	l.SecurityEvent(KindVaultAuthFailure, "login failed", slog.String("auth_method", "approle"),
		slog.Group("vault", slog.Int("status", 403), slog.String("token", "hvs.CAESIJ3kq9Vt2xYzQ8rW5nLmP0aB")))
	l.stop()
	var recs []Record
	for _, line := range bytes.Split(bytes.TrimSpace(w.bytes()), []byte("\n")) {
		var r Record
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	if r := recs[0]; r.Kind != KindPolicyReload || r.Detail["file"] != "policy.rego" || r.Seq != 1 {
		t.Errorf("event %+v", r)
	}
	r := recs[1]
	if r.Kind != KindVaultAuthFailure || r.Detail["auth_method"] != "approle" || r.Detail["vault.status"] != "403" ||
		!strings.HasPrefix(r.Detail["vault.token"], HMACPrefix) || r.Seq != 2 {
		t.Errorf("security event %+v", r)
	}
}
