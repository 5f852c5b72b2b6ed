package secrets

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRenewAtJitter: renewal lands at 50 % of life +-10 %, spread out.
func TestRenewAtJitter(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter := issued.Add(time.Hour)
	tests := []struct {
		u    float64
		want time.Duration
	}{
		{0, 24 * time.Minute},
		{0.5, 30 * time.Minute},
		{0.9999999999, 36 * time.Minute},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.u), func(t *testing.T) {
			if got := renewAt(issued, notAfter, tc.u).Sub(issued); got.Round(time.Second) != tc.want {
				t.Fatalf("renewAt(u=%v) = %v, want %v", tc.u, got, tc.want)
			}
		})
	}
	if got := renewAt(issued, issued.Add(-time.Second), 0.5); !got.Equal(issued) {
		t.Fatalf("expired: renewAt = %v, want now", got)
	}
}

// TestSchedulerSpreads100Identities: 100 identities issued together by the
// Manager are scheduled for renewal across the whole jitter window, never
// all at once.
func TestSchedulerSpreads100Identities(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	ca, err := NewLocalCA(LocalConfig{}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(ca)
	for i := range 100 {
		if err := m.Register(fmt.Sprintf("%sns/default/sa/agent-%d", testTD, i)); err != nil {
			t.Fatal(err)
		}
	}
	runManager(t, m)
	eventually(t, ctx, "all issued", func() bool { return m.Ready() == nil })
	m.mu.Lock()
	var fracs []float64
	for _, e := range m.ids {
		life := e.svid.NotAfter.Sub(e.issued)
		fracs = append(fracs, float64(e.due.Sub(e.issued))/float64(life))
	}
	m.mu.Unlock()
	slices.Sort(fracs)
	if fracs[0] < 0.4 || fracs[len(fracs)-1] > 0.6 {
		t.Fatalf("renewal points %v..%v of life, want within 0.4..0.6", fracs[0], fracs[len(fracs)-1])
	}
	if spread := fracs[len(fracs)-1] - fracs[0]; spread < 0.1 {
		t.Fatalf("renewal points span %.3f of life, want them spread over the 0.2 window", spread)
	}
	// No 1 %-of-life slot holds more than a fifth of the identities.
	counts := map[int]int{}
	for _, f := range fracs {
		counts[int(f*100)]++
	}
	for slot, n := range counts {
		if n > 20 {
			t.Fatalf("%d identities renew in slot %d%%", n, slot)
		}
	}
}

// TestManagerRotation: a subscriber sees the new SVID before the old one
// expires, and only for the identity that changed.
func TestManagerRotation(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	ca, err := NewLocalCA(LocalConfig{}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(ca)
	const a, b = testTD + "a", testTD + "b"
	if err := m.Register(a); err != nil {
		t.Fatal(err)
	}
	sub := m.Subscribe()
	defer sub.Close()
	runManager(t, m)
	first, err := m.SVID(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	for {
		ch, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(ch.SVIDs, b) {
			t.Fatalf("change names %s, which nobody registered", b)
		}
		cur, _ := m.SVID(ctx, a)
		if cur == first {
			continue
		}
		if !time.Now().Before(first.NotAfter) {
			t.Fatalf("rotated only after expiry")
		}
		if !slices.Equal(ch.SVIDs, []string{a}) {
			t.Fatalf("change %v, want [%s]", ch.SVIDs, a)
		}
		return
	}
}

// flakySource fails issuance while down is set.
type flakySource struct {
	*LocalCA
	down atomic.Bool
}

func (f *flakySource) IssueSVID(ctx context.Context, id string) (*SVID, error) {
	if f.down.Load() {
		return nil, errors.New("source unreachable")
	}
	return f.LocalCA.IssueSVID(ctx, id)
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// TestManagerLastKnownGood: while the source fails, the last SVID is
// served; readiness stays true until less than 10 % of its life is left;
// when the source is back a new SVID is served and readiness returns.
func TestManagerLastKnownGood(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	clock := &fakeClock{t: time.Now()}
	t0 := clock.now()
	ca, err := NewLocalCA(LocalConfig{}, time.Hour, WithClock(clock.now))
	if err != nil {
		t.Fatal(err)
	}
	src := &flakySource{LocalCA: ca}
	events := &eventLog{}
	m := NewManager(src, WithClock(clock.now), WithBackoff(time.Millisecond, 5*time.Millisecond), WithEventSink(events))
	const id = testTD + "a"
	if err := m.Ready(); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Ready before anything was issued = %v, want ErrNotReady", err)
	}
	if err := m.Register(id); err != nil {
		t.Fatal(err)
	}
	runManager(t, m)
	first, err := m.SVID(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "ready", func() bool { return m.Ready() == nil })

	src.down.Store(true)
	failures := func() float64 { return metricValue(t, m.o.metrics.issuance.WithLabelValues(resultError)) }
	steps := []struct {
		at    time.Duration
		ready bool
	}{
		{37 * time.Minute, true}, // past every renewal point: issuance fails
		{53 * time.Minute, true}, // 7 of 60 minutes left
		{55 * time.Minute, false},
		{61 * time.Minute, false}, // expired: still the last good one, not ready
	}
	for _, st := range steps {
		before := failures()
		clock.set(t0.Add(st.at))
		m.poke()
		eventually(t, ctx, "a failed retry", func() bool { return failures() > before })
		if s, _ := m.SVID(ctx, id); s != first {
			t.Fatalf("at +%v: served SVID changed while the source is down", st.at)
		}
		if err := m.Ready(); (err == nil) != st.ready {
			t.Fatalf("at +%v: Ready = %v, want ready=%v", st.at, err, st.ready)
		}
	}
	if events.count(EventIssuance) == 0 {
		t.Fatal("no security event for failed issuance")
	}
	src.down.Store(false)
	clock.set(t0.Add(62 * time.Minute)) // past the retry the last failure scheduled
	m.poke()
	eventually(t, ctx, "recovery", func() bool {
		s, _ := m.SVID(ctx, id)
		return s != first && m.Ready() == nil
	})
}

// failingSource fails issuance for the ids in fail.
type failingSource struct {
	*LocalCA
	fail map[string]bool
}

func (f *failingSource) IssueSVID(ctx context.Context, id string) (*SVID, error) {
	if f.fail[id] {
		return nil, errors.New("refused")
	}
	return f.LocalCA.IssueSVID(ctx, id)
}

// TestManagerRetire: the SVID of an agent a reload removed stops counting
// for readiness and stops rotating; the others are kept.
func TestManagerRetire(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	ca, err := NewLocalCA(LocalConfig{}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	const a, b, gone = testTD + "a", testTD + "b", testTD + "gone"
	m := NewManager(&failingSource{LocalCA: ca, fail: map[string]bool{gone: true}}, WithBackoff(time.Millisecond, 5*time.Millisecond))
	if err := m.Register(a, b, gone); err != nil {
		t.Fatal(err)
	}
	runManager(t, m)
	if _, err := m.SVID(ctx, b); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "a and b issued", func() bool {
		err := m.Ready()
		return err != nil && !strings.Contains(err.Error(), a) && !strings.Contains(err.Error(), b) && strings.Contains(err.Error(), gone)
	})

	m.Retire([]string{a, b, gone}, []string{a})
	if err := m.Ready(); err != nil {
		t.Fatalf("Ready after retiring the failing id = %v", err)
	}
	m.mu.Lock()
	_, hasB := m.ids[b]
	_, hasA := m.ids[a]
	m.mu.Unlock()
	if hasB || !hasA {
		t.Fatalf("registered after Retire: a=%v b=%v, want a only", hasA, hasB)
	}
	// a keeps rotating (2 s certificates); b does not.
	sub := m.Subscribe()
	defer sub.Close()
	first, _ := m.SVID(ctx, a)
	for {
		ch, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(ch.SVIDs, b) {
			t.Fatalf("change %v names retired %s", ch.SVIDs, b)
		}
		if cur, _ := m.SVID(ctx, a); cur != first {
			break
		}
	}
}

func TestSubscriptionCoalesces(t *testing.T) {
	ctx := testContext(t, 5*time.Second)
	ca, _ := NewLocalCA(LocalConfig{}, time.Hour)
	m := NewManager(ca)
	sub := m.Subscribe()
	m.mu.Lock()
	m.notifyLocked(Change{SVIDs: []string{"b"}})
	m.notifyLocked(Change{SVIDs: []string{"a", "b"}, Secrets: []string{"k"}})
	m.notifyLocked(Change{Bundle: true})
	m.mu.Unlock()
	ch, err := sub.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.SVIDs, []string{"a", "b"}) || !ch.Bundle || !slices.Equal(ch.Secrets, []string{"k"}) {
		t.Fatalf("Next = %+v", ch)
	}
	if ch := sub.Take(); !ch.Empty() {
		t.Fatalf("second Take = %+v, want empty", ch)
	}
	sub.Close()
	m.mu.Lock()
	m.notifyLocked(Change{Bundle: true})
	m.mu.Unlock()
	if ch := sub.Take(); !ch.Empty() {
		t.Fatal("closed subscription still receives")
	}
}

func TestConfigValidate(t *testing.T) {
	tok := &VaultTokenAuth{Env: "VAULT_TOKEN"}
	vaultCfg := func(mut func(*VaultConfig)) Config {
		c := Config{Source: SourceVault, Vault: VaultConfig{Address: "https://vault:8200", Auth: VaultAuth{Token: tok}, PKI: VaultPKI{Role: "agent"}}}
		if mut != nil {
			mut(&c.Vault)
		}
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		want []string // every message expected; none: valid
	}{
		{"default", Config{}, nil},
		{"vault ok", vaultCfg(nil), nil},
		{"bad source", Config{Source: "disk"}, []string{`secrets.source: must be "local" or "vault", not "disk"`}},
		{"short ttl", Config{CertTTL: time.Second}, []string{"secrets.certTTL: 1s is shorter than the 1m minimum"}},
		{"approle without secret id file", vaultCfg(func(v *VaultConfig) {
			v.Auth = VaultAuth{AppRole: &VaultAppRoleAuth{RoleID: "r"}}
		}), []string{"secrets.vault.auth.appRole.secretIDFile: required"}},
		{"approle without role id", vaultCfg(func(v *VaultConfig) {
			v.Auth = VaultAuth{AppRole: &VaultAppRoleAuth{SecretIDFile: "/s"}}
		}), []string{"secrets.vault.auth.appRole.roleID: set exactly one of roleID and roleIDFile"}},
		{"kubernetes without role", vaultCfg(func(v *VaultConfig) {
			v.Auth = VaultAuth{Kubernetes: &VaultKubernetesAuth{}}
		}), []string{"secrets.vault.auth.kubernetes.role: required"}},
		{"no auth", vaultCfg(func(v *VaultConfig) { v.Auth = VaultAuth{} }), []string{"secrets.vault.auth: required: one of token, appRole, kubernetes"}},
		{"two auths", vaultCfg(func(v *VaultConfig) { v.Auth.Kubernetes = &VaultKubernetesAuth{Role: "r"} }), []string{"secrets.vault.auth: set only one"}},
		{"token both", vaultCfg(func(v *VaultConfig) { v.Auth.Token = &VaultTokenAuth{Env: "A", File: "/b"} }), []string{"secrets.vault.auth.token: set exactly one of env and file"}},
		{"everything wrong", vaultCfg(func(v *VaultConfig) {
			v.Address = "vault:8200"
			v.PKI.Role = ""
			v.KV = []VaultKV{{Name: "a", Path: "p", Key: "k"}, {Name: "a"}}
			v.PollInterval = time.Millisecond
			v.IssueRate = -1
		}), []string{
			`secrets.vault.address: "vault:8200" is not an http(s) URL`,
			"secrets.vault.pki.role: required",
			`secrets.vault.kv[1].name: "a" is used twice`,
			"secrets.vault.kv[1].path: required",
			"secrets.vault.kv[1].key: required",
			"secrets.vault.pollInterval: 1ms is shorter than the 1s minimum",
			"secrets.vault.issueRate: must be positive",
		}},
		{"local secret without file", Config{Local: LocalConfig{Secrets: map[string]string{"k": ""}}}, []string{"secrets.local.secrets.k: file required"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.SetDefaults()
			err := c.Validate("secrets")
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
	if _, err := New(vaultCfg(func(v *VaultConfig) { v.Auth = VaultAuth{} })); err == nil {
		t.Fatal("New accepted an invalid configuration")
	}
	if _, err := New(vaultCfg(nil)); err != nil {
		t.Fatalf("New(vault) contacted Vault or failed: %v", err)
	}
}
