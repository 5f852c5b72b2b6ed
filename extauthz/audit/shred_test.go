package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestForgetThenVerify: personal fields are encrypted per data subject;
// forgetting one destroys its key, the log still verifies, that subject's
// fields are unreadable and the others' are not, and the forget itself is
// audited by the next logger.
func TestForgetThenVerify(t *testing.T) {
	dir := t.TempDir()
	path, store := filepath.Join(dir, "audit.log"), filepath.Join(dir, "subjects")
	cfg := Config{
		Shred:      Shred{KeyStore: store, Headers: []string{"X-Patient-Id"}, Claims: []string{"email"}},
		Encryption: Encryption{KeySecret: "given as an option"},
		Sinks:      []SinkConfig{{Type: "file", Path: path}},
	}
	opts := []Option{WithSealKey(sealKey), WithEncryptionKey(encKey)}
	rec := func(subject, email, patient string) *Record {
		return &Record{Kind: KindDecision, Decision: "allow", Principal: "spiffe://mesh.local/a", Subject: subject,
			Headers: map[string]string{"x-patient-id": patient, "x-other": "visible"}, Claims: map[string]any{"email": email, "amr": []any{"mfa"}}}
	}
	l := start(t, cfg, opts...)
	for _, r := range []*Record{rec("alice", "alice@example.org", "p-111"), rec("bob", "bob@example.org", "p-222"), rec("alice", "alice@example.org", "p-111")} {
		if err := l.Audit(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.stop(); err != nil {
		t.Fatal(err)
	}
	keys, _ := filepath.Glob(filepath.Join(store, "*.key"))
	if len(keys) != 2 {
		t.Fatalf("%d subject keys, want 2", len(keys))
	}

	id, err := Forget(store, encKey, "alice", "ticket 42")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(store, id+subjectKeyExt)); !os.IsNotExist(err) {
		t.Fatalf("alice's key still exists: %v", err)
	}
	// The next logger audits the forget (and removes the note).
	l = start(t, cfg, opts...)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(store, id+tombstoneExt)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the forget was not audited")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := l.Audit(rec("bob", "bob@example.org", "p-222")); err != nil {
		t.Fatal(err)
	}
	l.stop()

	// The file holds no personal field in clear, before or after.
	raw, _ := os.ReadFile(path)
	for _, secret := range []string{"alice", "bob@", "p-111", "p-222"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the log holds %q", secret)
		}
	}
	sv, _ := NewSealVerifier(SealHMAC, sealKey)
	un, err := NewUnshredder(store, encKey)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	s, err := VerifyFilesWith(VerifyOptions{Seal: sv, EncryptionKey: encKey, Record: func(b []byte) {
		lines = append(lines, string(un.Line(b)))
	}}, path)
	if err != nil || !s.Complete || !s.SealsChecked {
		t.Fatalf("verify after forget: %v %q", err, s.Problems)
	}
	if s.Records != 5 || s.Kinds[KindSubjectForgotten] != 1 {
		t.Fatalf("records %d kinds %v", s.Records, s.Kinds)
	}
	all := strings.Join(lines, "\n")
	for _, want := range []string{`"subject":"bob"`, `"email":"bob@example.org"`, `"x-patient-id":"p-222"`, `"x-other":"visible"`,
		`"subject":"forgotten:` + id, `"x-patient-id":"forgotten:` + id, `"kind":"subject_forgotten"`, `"subject_id":"` + id, `"reason":"ticket 42"`} {
		if !strings.Contains(all, want) {
			t.Errorf("read lacks %s:\n%s", want, all)
		}
	}
	if strings.Contains(all, "alice") || strings.Contains(all, "p-111") {
		t.Errorf("alice's fields readable after forget:\n%s", all)
	}
}

// TestShredWithoutKeyStoreRedacts: when a subject key cannot be made, the
// personal fields are digested, never written in clear.
func TestShredWithoutKeyStoreRedacts(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "audit.log")
	cfg := Config{Shred: Shred{KeyStore: filepath.Join(notDir, "store")}, Encryption: Encryption{KeyFile: "x"},
		Sinks: []SinkConfig{{Type: "file", Path: path}}}
	l := start(t, cfg, WithEncryptionKey(encKey))
	if err := l.Audit(&Record{Kind: KindDecision, Subject: "carol"}); err != nil {
		t.Fatal(err)
	}
	l.stop()
	var got []string
	if _, err := VerifyFilesWith(VerifyOptions{EncryptionKey: encKey, Record: func(b []byte) { got = append(got, string(b)) }}, path); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || strings.Contains(got[0], "carol") || !strings.Contains(got[0], `"subject":"`+HMACPrefix) {
		t.Errorf("records %q", got)
	}
}
