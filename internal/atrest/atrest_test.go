package atrest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"testing"
)

func TestSealOpen(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	salt, sealed, err := Seal(key, "p", []byte("secret"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("secret")) {
		t.Fatal("plaintext in the ciphertext")
	}
	if got, err := Open(key, "p", salt, sealed, []byte("aad")); err != nil || string(got) != "secret" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	for name, f := range map[string]func() ([]byte, error){
		"wrong key":     func() ([]byte, error) { return Open(bytes.Repeat([]byte{2}, 32), "p", salt, sealed, []byte("aad")) },
		"wrong purpose": func() ([]byte, error) { return Open(key, "q", salt, sealed, []byte("aad")) },
		"wrong aad":     func() ([]byte, error) { return Open(key, "p", salt, sealed, []byte("other")) },
		"truncated":     func() ([]byte, error) { return Open(key, "p", salt, sealed[:10], []byte("aad")) },
	} {
		if _, err := f(); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: %v, want ErrDecrypt", name, err)
		}
	}
}

func TestDecodeKey(t *testing.T) {
	k := bytes.Repeat([]byte{0xab}, 32)
	for name, in := range map[string][]byte{"raw": k, "hex": []byte(hex.EncodeToString(k) + "\n"), "base64": []byte(base64.StdEncoding.EncodeToString(k))} {
		got, err := DecodeKey(in)
		if err != nil || !bytes.Equal(got, k) {
			t.Errorf("%s: %x, %v", name, got, err)
		}
	}
	if _, err := DecodeKey([]byte("short")); err == nil {
		t.Error("a short key was accepted")
	}
	if KeyID(k) == KeyID(bytes.Repeat([]byte{1}, 32)) || len(KeyID(k)) != 16 {
		t.Error("key ids do not tell keys apart")
	}
}
