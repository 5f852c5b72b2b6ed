package secrets

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/meshward/meshward/internal/atrest"
)

// An encrypted ca.key is one PEM block of this type: its headers name
// the cipher, the key id (as in audit segment headers) and the salt; its
// bytes are nonce ‖ AES-256-GCM(PKCS #8 DER), with the block type and key
// id authenticated.
const (
	encryptedKeyPEMType = "MESHWARD ENCRYPTED PRIVATE KEY"
	caKeyPurpose        = "meshward local ca key v1"
	caKeyCipher         = "aes-256-gcm"
)

// ErrCAKeyEncrypted: ca.key is encrypted and no key, or another key, was
// given.
var ErrCAKeyEncrypted = errors.New("the CA key is encrypted")

func caKeyAAD(keyID string) []byte { return []byte(encryptedKeyPEMType + "\n" + keyID) }

// writeCAKey writes key as PKCS #8 PEM, encrypted when encKey is set.
func writeCAKey(path string, key *ecdsa.PrivateKey, encKey []byte) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmtErr("marshal root key", err)
	}
	block := &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	if encKey != nil {
		id := atrest.KeyID(encKey)
		salt, sealed, err := atrest.Seal(encKey, caKeyPurpose, der, caKeyAAD(id))
		if err != nil {
			return fmtErr("encrypt root key", err)
		}
		block = &pem.Block{Type: encryptedKeyPEMType, Headers: map[string]string{
			"Cipher": caKeyCipher, "Key-Id": id, "Salt": hex.EncodeToString(salt),
		}, Bytes: sealed}
	}
	return writePrivate(path, pem.EncodeToMemory(block))
}

// openCAKey returns the plaintext PEM of a ca.key file, decrypting an
// encrypted one with encKey; encrypted says which it was.
func openCAKey(data, encKey []byte) (plain []byte, encrypted bool, err error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != encryptedKeyPEMType {
		return data, false, nil
	}
	id, salt := block.Headers["Key-Id"], block.Headers["Salt"]
	if c := block.Headers["Cipher"]; c != caKeyCipher {
		return nil, true, fmt.Errorf("encrypted with cipher %q, want %s", c, caKeyCipher)
	}
	if encKey == nil {
		return nil, true, fmt.Errorf("%w (key id %s): set secrets.local.caKeyEncryption.keyFile", ErrCAKeyEncrypted, id)
	}
	if got := atrest.KeyID(encKey); got != id {
		return nil, true, fmt.Errorf("%w with key id %s, and secrets.local.caKeyEncryption.keyFile holds key %s", ErrCAKeyEncrypted, id, got)
	}
	s, err := hex.DecodeString(salt)
	if err != nil || len(s) != atrest.SaltSize {
		return nil, true, fmt.Errorf("encrypted key: bad Salt header %q", salt)
	}
	der, err := atrest.Open(encKey, caKeyPurpose, s, block.Bytes, caKeyAAD(id))
	if err != nil {
		return nil, true, fmt.Errorf("%w: %w", ErrCAKeyEncrypted, err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	return bytes.TrimSpace(out), true, nil
}
