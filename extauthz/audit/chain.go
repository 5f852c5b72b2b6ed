package audit

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/meshward/meshward/internal/atrest"
)

// A file sink chains its records: each record line carries "prev", the
// SHA-256 of the record line written before it (as written, so of the
// ciphertext when encrypted). Between the records it writes meta lines,
// which are not part of the chain and start with metaPrefix:
//
//   - a segment header at every open (start, rotation, reopen), naming the
//     chain head it continues from and how the records that follow are
//     encrypted (key id, salt);
//   - a seal every Seal.Interval, at rotation ("end":"rotate") and at
//     shutdown ("end":"close"), naming the chain head it covers.
//
// With a seal key, headers and seals carry "sig": an HMAC-SHA256 or an
// Ed25519 signature over the line up to the sig field.
const metaPrefix = `{"meta":`

// Meta line kinds.
const (
	metaSegment = "segment"
	metaSeal    = "seal"
)

// Seal ends.
const (
	sealEndRotate = "rotate"
	sealEndClose  = "close"
)

// EncAES256GCM names the record encryption in segment headers.
const EncAES256GCM = "aes-256-gcm"

// metaLine is a segment header or a seal. Field order is the line's.
type metaLine struct {
	Meta    string    `json:"meta"`
	Time    time.Time `json:"time"`
	Process string    `json:"process"`
	// Head is the hash of the last record line before this line ("" when
	// the chain starts here).
	Head string `json:"head"`
	// Seq is the sequence number of that record (seals).
	Seq uint64 `json:"seq,omitempty"`
	// Open is why a segment starts: start, rotate or reopen (headers).
	Open string `json:"open,omitempty"`
	// End is rotate or close for the last seal of a file (seals).
	End string `json:"end,omitempty"`
	// Every is the seal interval, so that a verifier knows how old the
	// last seal of a live log may be (headers).
	Every string `json:"every,omitempty"`
	// Enc, KeyID and Salt say how the segment's records are encrypted.
	Enc   string `json:"enc,omitempty"`
	KeyID string `json:"key_id,omitempty"`
	Salt  string `json:"salt,omitempty"`
	// Alg and SealKeyID name the signature; Sig is last.
	Alg       string `json:"alg,omitempty"`
	SealKeyID string `json:"seal_key_id,omitempty"`
	Sig       string `json:"sig,omitempty"`
}

const sigField = `,"sig":"`

// sealer signs meta lines. A nil sealer leaves them unsigned.
type sealer struct {
	alg   string
	id    string
	mac   []byte             // hmac-sha256
	priv  ed25519.PrivateKey // ed25519 (writer)
	pub   ed25519.PublicKey  // ed25519 (verifier)
	check bool               // verify only
}

// newSealer builds the writer's sealer from a configured key.
func newSealer(alg string, key []byte) (*sealer, error) {
	switch alg {
	case SealEd25519:
		seed, err := decodeKey32(key)
		if err != nil {
			return nil, fmt.Errorf("audit: seal key: %w", err)
		}
		priv := ed25519.NewKeyFromSeed(seed)
		pub := priv.Public().(ed25519.PublicKey)
		return &sealer{alg: alg, id: keyID(pub), priv: priv, pub: pub}, nil
	default:
		k := bytes.TrimSpace(key)
		if len(k) < MinKeySize {
			return nil, fmt.Errorf("audit: seal key has %d bytes, want at least %d", len(k), MinKeySize)
		}
		return &sealer{alg: SealHMAC, id: macKeyID(k), mac: k}, nil
	}
}

// NewSealVerifier returns what VerifyOptions needs to check seals: key is
// the HMAC key, or for Ed25519 the public key (32 bytes raw, hex or
// base64).
func NewSealVerifier(alg string, key []byte) (*SealVerifier, error) {
	switch alg {
	case SealEd25519:
		pub, err := decodeKey32(key)
		if err != nil {
			return nil, fmt.Errorf("audit: seal public key: %w", err)
		}
		return &SealVerifier{s: &sealer{alg: alg, id: keyID(pub), pub: pub, check: true}}, nil
	case SealHMAC, "":
		s, err := newSealer(SealHMAC, key)
		if err != nil {
			return nil, err
		}
		return &SealVerifier{s: s}, nil
	default:
		return nil, fmt.Errorf("audit: seal algorithm %q is not %s or %s", alg, SealHMAC, SealEd25519)
	}
}

// SealVerifier checks the signatures of headers and seals.
type SealVerifier struct{ s *sealer }

// SealPublicKey returns the Ed25519 public key (hex) of a seed, for
// verifiers that must not hold the signing key.
func SealPublicKey(seed []byte) (string, error) {
	s, err := decodeKey32(seed)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(ed25519.NewKeyFromSeed(s).Public().(ed25519.PublicKey)), nil
}

func (s *sealer) sign(msg []byte) string {
	if s.alg == SealEd25519 {
		return hex.EncodeToString(ed25519.Sign(s.priv, msg))
	}
	m := hmac.New(sha256.New, s.mac)
	m.Write(msg)
	return hex.EncodeToString(m.Sum(nil))
}

func (s *sealer) verify(msg []byte, sig string) bool {
	b, err := hex.DecodeString(sig)
	if err != nil {
		return false
	}
	if s.alg == SealEd25519 {
		return len(b) == ed25519.SignatureSize && ed25519.Verify(s.pub, msg, b)
	}
	m := hmac.New(sha256.New, s.mac)
	m.Write(msg)
	return hmac.Equal(m.Sum(nil), b)
}

// appendMeta appends m as one line (with newline), signed by s if any.
func appendMeta(dst []byte, m *metaLine, s *sealer) []byte {
	m.Sig = ""
	if s != nil {
		m.Alg, m.SealKeyID = s.alg, s.id
	}
	j, _ := json.Marshal(m) // strings and a time: cannot fail
	if s == nil {
		return append(append(dst, j...), '\n')
	}
	msg := j[:len(j)-1]
	dst = append(dst, msg...)
	dst = append(dst, sigField...)
	dst = append(dst, s.sign(msg)...)
	return append(dst, "\"}\n"...)
}

// parseMeta decodes a meta line and returns the signed part.
func parseMeta(line []byte) (*metaLine, []byte, error) {
	var m metaLine
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, nil, err
	}
	if m.Meta != metaSegment && m.Meta != metaSeal {
		return nil, nil, fmt.Errorf("unknown meta line %q", m.Meta)
	}
	signed := line
	if m.Sig != "" {
		i := bytes.LastIndex(line, []byte(sigField))
		if i < 0 {
			return nil, nil, errors.New("sig is not the last field")
		}
		signed = line[:i]
	}
	return &m, signed, nil
}

// lineHash is the chain hash of a line as written, without its newline.
func lineHash(line []byte) [sha256.Size]byte { return sha256.Sum256(line) }

// decodeKey32 reads a 32-byte key given raw, as 64 hex digits or in
// base64 (surrounding whitespace ignored).
func decodeKey32(k []byte) ([]byte, error) { return atrest.DecodeKey(k) }

// keyID names a public key or an encryption key without revealing it.
func keyID(pub []byte) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:8])
}

func macKeyID(k []byte) string { return atrest.KeyID(k) }

// EncryptionKeyID is the key id written in segment headers for an
// encryption key.
func EncryptionKeyID(key []byte) (string, error) {
	k, err := decodeKey32(key)
	if err != nil {
		return "", err
	}
	return macKeyID(k), nil
}

// segmentKey derives the AES-256 key of one segment from the master key
// and the segment's random salt, so that nonces (a counter per segment)
// never repeat under one key.
func segmentKey(master, salt []byte) (cipher.AEAD, error) {
	return atrest.AEAD(master, salt, "meshward audit segment v1")
}

// encrypter encrypts record lines of one segment: each line is
// base64(nonce || AES-256-GCM(line)), the nonce a counter.
type encrypter struct {
	aead cipher.AEAD
	n    uint64
	buf  []byte
}

func (e *encrypter) appendLine(dst, plain []byte) []byte {
	e.n++
	var nonce [12]byte
	binary.BigEndian.PutUint64(nonce[4:], e.n)
	e.buf = append(e.buf[:0], nonce[:]...)
	e.buf = e.aead.Seal(e.buf, nonce[:], plain, nil)
	n := base64.StdEncoding.EncodedLen(len(e.buf))
	dst = append(dst, make([]byte, n)...)
	base64.StdEncoding.Encode(dst[len(dst)-n:], e.buf)
	return dst
}

// decryptLine opens one encrypted record line.
func decryptLine(aead cipher.AEAD, line []byte) ([]byte, error) {
	raw := make([]byte, base64.StdEncoding.DecodedLen(len(line)))
	n, err := base64.StdEncoding.Decode(raw, line)
	if err != nil {
		return nil, errors.New("not base64")
	}
	raw = raw[:n]
	if len(raw) < aead.NonceSize()+aead.Overhead() {
		return nil, errors.New("too short")
	}
	out, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], nil)
	if err != nil {
		return nil, errors.New("does not decrypt (wrong key or changed)")
	}
	return out, nil
}

// configuredKey picks a key: the one given as an option, else (with no
// source) the key file; a keySecret needs a source.
func configuredKey(what string, key []byte, src KeySource, file, secret string, readFile func(string) ([]byte, error)) ([]byte, error) {
	if key != nil || src != nil {
		return key, nil
	}
	switch {
	case secret != "":
		return nil, fmt.Errorf("audit: %s.keySecret is set but no key source was given", what)
	case file != "":
		k, err := readFile(file)
		if err != nil {
			return nil, fmt.Errorf("audit: read %s.keyFile: %w", what, err)
		}
		return k, nil
	}
	return nil, nil
}

// startChain loads the seal and encryption keys (from their sources when
// given) and hands them to the file sinks, before they open.
func (l *Logger) startChain(ctx context.Context) error {
	seal, enc := l.sealKey, l.encKey
	var err error
	if seal == nil && l.sealSrc != nil {
		if seal, err = l.sealSrc(ctx); err != nil {
			return fmt.Errorf("audit: load seal key: %w", err)
		}
	}
	if enc == nil && l.encSrc != nil {
		if enc, err = l.encSrc(ctx); err != nil {
			return fmt.Errorf("audit: load encryption key: %w", err)
		}
	}
	var s *sealer
	if seal != nil {
		if s, err = newSealer(l.cfg.Seal.Algorithm, seal); err != nil {
			return err
		}
	}
	var id string
	if enc != nil {
		if enc, err = decodeKey32(enc); err != nil {
			return fmt.Errorf("audit: encryption key: %w", err)
		}
		id = macKeyID(enc)
	}
	for _, st := range l.sinks {
		if st.file != nil {
			st.file.sealer, st.file.encKey, st.file.keyID = s, enc, id
		}
	}
	if l.cfg.Shred.KeyStore != "" {
		if enc == nil {
			return errors.New("audit: shred.keyStore needs an encryption key")
		}
		if l.shred, err = newShredder(&l.cfg, enc); err != nil {
			return fmt.Errorf("audit: shred: %w", err)
		}
	}
	if s == nil && l.hasFileSink() {
		l.log.Warn("audit: no seal key configured; file sinks are hash-chained but their seals are not signed")
	}
	return nil
}

func (l *Logger) hasFileSink() bool {
	for _, st := range l.sinks {
		if st.file != nil {
			return true
		}
	}
	return false
}

// IsMetaLine reports whether a line of a file sink is a segment header
// or a seal rather than a record (readers of the file skip them).
func IsMetaLine(line []byte) bool { return bytes.HasPrefix(line, []byte(metaPrefix)) }
