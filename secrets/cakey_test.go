package secrets

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshward/meshward/extauthz/audit"
)

func writeKeyFile(t *testing.T, dir, name string, key []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLocalCAKeyEncrypted: with caKeyEncryption the CA key is written
// encrypted (no plaintext key in the file, the audit key id in its
// header), loads back as the same CA with the key, and is refused without
// it, with another key, or changed by one byte. A plaintext ca.key is
// encrypted in place when a key is configured.
func TestLocalCAKeyEncrypted(t *testing.T) {
	keys := t.TempDir()
	key := bytes.Repeat([]byte{7}, 32)
	good := writeKeyFile(t, keys, "enc.key", key)
	wrong := writeKeyFile(t, keys, "other.key", bytes.Repeat([]byte{8}, 32))
	dir := filepath.Join(t.TempDir(), "ca")
	cfg := func(keyFile string) LocalConfig {
		return LocalConfig{DataDir: dir, CAKeyEncryption: CAKeyEncryption{KeyFile: keyFile}}
	}

	ca, err := NewLocalCA(cfg(good), 0)
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, localCAKeyFile)
	raw, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	id, err := audit.EncryptionKeyID(key)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(raw), "-----BEGIN "+encryptedKeyPEMType+"-----") || strings.Contains(string(raw), "BEGIN PRIVATE KEY") ||
		!strings.Contains(string(raw), "Key-Id: "+id) {
		t.Fatalf("ca.key is not encrypted under the audit key id %s:\n%s", id, raw)
	}

	again, err := NewLocalCA(cfg(good), 0)
	if err != nil {
		t.Fatalf("reload with the key: %v", err)
	}
	if !again.root.Equal(ca.root) || !again.key.Equal(ca.key) {
		t.Fatal("reloaded a different CA")
	}

	for name, c := range map[string]LocalConfig{"no key": cfg(""), "wrong key": cfg(wrong)} {
		if _, err := NewLocalCA(c, 0); !errors.Is(err, ErrCAKeyEncrypted) || !strings.Contains(err.Error(), id) {
			t.Errorf("%s: err = %v, want ErrCAKeyEncrypted naming key id %s", name, err, id)
		}
	}

	// One byte of the ciphertext changed: refused, not a different key.
	block := raw
	body := bytes.Index(block, []byte("\n\n")) + 2
	block[body+5] ^= 'A' ^ 'B'
	if block[body+5] == '\n' || block[body+5] == '-' {
		t.Fatal("test setup: flipped a structural byte")
	}
	if err := os.WriteFile(keyPath, block, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewLocalCA(cfg(good), 0); err == nil {
		t.Error("a changed encrypted key was accepted")
	}

	// Plaintext ca.key + a configured key: encrypted in place, same CA.
	plainDir := filepath.Join(t.TempDir(), "ca")
	first, err := NewLocalCA(LocalConfig{DataDir: plainDir}, 0)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ = os.ReadFile(filepath.Join(plainDir, localCAKeyFile))
	if !strings.Contains(string(raw), "BEGIN PRIVATE KEY") {
		t.Fatalf("without a key ca.key should stay plaintext PKCS #8:\n%s", raw)
	}
	migrated, err := NewLocalCA(LocalConfig{DataDir: plainDir, CAKeyEncryption: CAKeyEncryption{KeyFile: good}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ = os.ReadFile(filepath.Join(plainDir, localCAKeyFile))
	if strings.Contains(string(raw), "BEGIN PRIVATE KEY") || !strings.Contains(string(raw), encryptedKeyPEMType) || !migrated.key.Equal(first.key) {
		t.Fatalf("plaintext ca.key not encrypted in place:\n%s", raw)
	}
	if _, err := NewLocalCA(LocalConfig{DataDir: plainDir}, 0); !errors.Is(err, ErrCAKeyEncrypted) {
		t.Errorf("after migration, no key: %v", err)
	}
}

func TestLocalCAKeyEncryptionConfig(t *testing.T) {
	c := Config{Local: LocalConfig{CAKeyEncryption: CAKeyEncryption{KeyFile: "/k"}}}
	c.SetDefaults()
	if err := c.Validate("secrets"); err == nil || !strings.Contains(err.Error(), "secrets.local.caKeyEncryption.keyFile: needs local.dataDir") {
		t.Fatalf("err = %v", err)
	}
	_, err := NewLocalCA(LocalConfig{DataDir: filepath.Join(t.TempDir(), "ca"), CAKeyEncryption: CAKeyEncryption{KeyFile: writeKeyFile(t, t.TempDir(), "short", []byte("short"))}}, 0)
	if err == nil || !strings.Contains(err.Error(), "want 32 bytes") {
		t.Fatalf("short key: %v", err)
	}
}
