package audit_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/meshward/meshward/extauthz/audit"
)

// A Logger writes to a file; Audit never blocks, and a non-nil error means
// the decision must be denied. Verify checks the file afterwards.
func Example() {
	dir, _ := os.MkdirTemp("", "audit-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "audit.log")

	l, err := audit.New(audit.Config{
		Sinks:     []audit.SinkConfig{{Type: "file", Path: path}},
		Redaction: audit.Redaction{Claims: []string{"email"}},
	}, audit.WithHMACKey([]byte("a deployment key of 16+ bytes")))
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()

	err = l.Audit(&audit.Record{Kind: audit.KindDecision, Principal: "spiffe://mesh.local/agent/planner",
		Decision: "deny", Reason: "missing_role", Status: 403, Claims: map[string]any{"email": "alice@example.org"}})
	if err != nil {
		fmt.Println("deny: the decision could not be audited:", err)
	}
	_ = l.Event(audit.KindPolicyReload, "policy.rego: parse error", map[string]string{"file": "policy.rego"})

	cancel() // Run writes what is queued, then returns
	if err := <-done; err != nil {
		fmt.Println(err)
	}
	s, err := audit.VerifyFiles(path)
	fmt.Println(s.Records, s.Decisions["deny"], s.TopReasons[0].Value, err)
	// Output: 2 1 missing_role <nil>
}

// A sealed, encrypted file sink, verified with the seal key and decrypted
// with the encryption key.
func ExampleVerifyFilesWith() {
	dir, _ := os.MkdirTemp("", "audit-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "audit.log")
	sealKey := []byte("a seal key of at least 16 bytes")
	encKey := []byte("0123456789abcdef0123456789abcdef") // 32 bytes

	l, err := audit.New(audit.Config{Sinks: []audit.SinkConfig{{Type: "file", Path: path}}},
		audit.WithHMACKey([]byte("a deployment key of 16+ bytes")), audit.WithSealKey(sealKey), audit.WithEncryptionKey(encKey))
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	_ = l.Audit(&audit.Record{Kind: audit.KindDecision, Principal: "spiffe://mesh.local/agent/planner", Decision: "allow"})
	cancel()
	<-done

	sv, _ := audit.NewSealVerifier(audit.SealHMAC, sealKey)
	s, err := audit.VerifyFilesWith(audit.VerifyOptions{Seal: sv, EncryptionKey: encKey}, path)
	fmt.Println(s.Records, s.Encrypted, s.SealsChecked, s.Complete, err)
	// Output: 1 1 true true <nil>
}
