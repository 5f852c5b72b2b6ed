// Package atrest is meshward's encryption at rest, shared by the audit
// file sink and the local CA's key file: a 32-byte master key (given raw,
// as 64 hex digits or in base64), named by a key id that does not reveal
// it, and AES-256-GCM under a key derived with HKDF-SHA256 from the
// master key, a random salt and a purpose string, so that no two uses
// share an AES key.
package atrest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// SaltSize is the size of the random salt of each derived key.
const SaltSize = 16

// ErrDecrypt: the ciphertext does not open under the key (wrong key, or
// changed).
var ErrDecrypt = errors.New("does not decrypt (wrong key or changed)")

// DecodeKey reads a 32-byte key given raw, as 64 hex digits or in base64
// (surrounding whitespace ignored).
func DecodeKey(k []byte) ([]byte, error) {
	if len(k) == 32 {
		return bytes.Clone(k), nil
	}
	t := bytes.TrimSpace(k)
	if len(t) == 32 {
		return bytes.Clone(t), nil
	}
	if b, err := hex.DecodeString(string(t)); err == nil && len(b) == 32 {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(string(t)); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, fmt.Errorf("want 32 bytes (raw, 64 hex digits or base64), got %d bytes", len(t))
}

// KeyID names a decoded master key without revealing it: the first 8
// bytes of HMAC-SHA256(key, "meshward audit key id"), in hex (the label
// is the audit log's, where key ids first appeared).
func KeyID(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("meshward audit key id"))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// AEAD is AES-256-GCM under HKDF-SHA256(key, salt, purpose).
func AEAD(key, salt []byte, purpose string) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, key, salt, purpose, 32)
	if err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Seal encrypts one message under a fresh salt: it returns the salt and
// nonce ‖ ciphertext. aad is authenticated, not encrypted.
func Seal(key []byte, purpose string, plain, aad []byte) (salt, sealed []byte, err error) {
	salt = make([]byte, SaltSize)
	rand.Read(salt)
	aead, err := AEAD(key, salt, purpose)
	if err != nil {
		return nil, nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return salt, aead.Seal(nonce, nonce, plain, aad), nil
}

// Open decrypts what Seal returned.
func Open(key []byte, purpose string, salt, sealed, aad []byte) ([]byte, error) {
	aead, err := AEAD(key, salt, purpose)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, ErrDecrypt
	}
	out, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return out, nil
}
