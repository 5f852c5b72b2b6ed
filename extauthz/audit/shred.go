package audit

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"
)

// Crypto-shredding: the personal fields of a record (the end-user subject
// and the configured headers and claims) are encrypted with a key of
// their data subject, kept in the key store (one file per subject,
// wrapped with the encryption key). Forget destroys that file: the
// records stay as they are, so the chain and the seals still verify, but
// that person's fields can no longer be read.

// ShredPrefix starts every shredded value: shred:<subject id>:<base64>.
const ShredPrefix = "shred:"

// ForgottenPrefix replaces a shredded value whose key was destroyed, in
// what `audit read` prints.
const ForgottenPrefix = "forgotten:"

// KindSubjectForgotten is the security event written when the logger
// finds that a data subject's key was destroyed by Forget.
const KindSubjectForgotten = "subject_forgotten"

const (
	subjectKeyExt  = ".key"
	tombstoneExt   = ".forgotten"
	subjectIDBytes = 16
)

// subjectKeys opens and creates subject keys in a key store.
type subjectKeys struct {
	dir  string
	id   []byte      // HMAC key naming subjects
	wrap cipher.AEAD // wraps subject keys
}

func newSubjectKeys(dir string, master []byte) (*subjectKeys, error) {
	idKey, err := hkdf.Key(sha256.New, master, nil, "meshward audit subject id v1", 32)
	if err != nil {
		return nil, err
	}
	wk, err := hkdf.Key(sha256.New, master, nil, "meshward audit subject wrap v1", 32)
	if err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(wk)
	if err != nil {
		return nil, err
	}
	w, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &subjectKeys{dir: dir, id: idKey, wrap: w}, nil
}

// subjectID names a subject in the store and in records: a keyed digest,
// so neither reveals the subject.
func (k *subjectKeys) subjectID(subject string) string {
	m := hmac.New(sha256.New, k.id)
	m.Write([]byte(subject))
	return hex.EncodeToString(m.Sum(nil)[:subjectIDBytes])
}

func (k *subjectKeys) path(id, ext string) string { return filepath.Join(k.dir, id+ext) }

// open returns the subject's key; with create, a missing key is made.
// ErrNotExist means there is none (never made, or forgotten).
func (k *subjectKeys) open(id string, create bool) (cipher.AEAD, error) {
	raw, err := os.ReadFile(k.path(id, subjectKeyExt))
	if errors.Is(err, fs.ErrNotExist) && create {
		return k.create(id)
	}
	if err != nil {
		return nil, err
	}
	wrapped, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(wrapped) < k.wrap.NonceSize() {
		return nil, fmt.Errorf("subject key %s: malformed", id)
	}
	key, err := k.wrap.Open(nil, wrapped[:k.wrap.NonceSize()], wrapped[k.wrap.NonceSize():], []byte(id))
	if err != nil {
		return nil, fmt.Errorf("subject key %s: does not unwrap with this key", id)
	}
	return newGCM(key)
}

func (k *subjectKeys) create(id string) (cipher.AEAD, error) {
	if err := os.MkdirAll(k.dir, 0o700); err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	rand.Read(key)
	nonce := make([]byte, k.wrap.NonceSize())
	rand.Read(nonce)
	wrapped := k.wrap.Seal(nonce, nonce, key, []byte(id))
	f, err := os.OpenFile(k.path(id, subjectKeyExt), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // made meanwhile (another writer)
		return k.open(id, false)
	}
	if err != nil {
		return nil, err
	}
	_, werr := f.WriteString(base64.StdEncoding.EncodeToString(wrapped) + "\n")
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(k.path(id, subjectKeyExt)) // not usable; the write error is the one to report
		return nil, werr
	}
	return newGCM(key)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// shredder encrypts the personal fields of records; used by the Run
// goroutine only.
type shredder struct {
	keys    *subjectKeys
	headers map[string]bool
	claims  map[string]bool
	cache   map[string]cipher.AEAD
	loaded  time.Time
	buf     []byte
}

// shredCacheTTL bounds how long a destroyed key keeps being used by a
// running logger.
const shredCacheTTL = 10 * time.Second

func newShredder(c *Config, master []byte) (*shredder, error) {
	keys, err := newSubjectKeys(c.Shred.KeyStore, master)
	if err != nil {
		return nil, err
	}
	s := &shredder{keys: keys, headers: map[string]bool{}, claims: map[string]bool{}, cache: map[string]cipher.AEAD{}}
	for _, h := range c.Shred.Headers {
		s.headers[strings.ToLower(h)] = true
	}
	for _, cl := range c.Shred.Claims {
		s.claims[cl] = true
	}
	return s, nil
}

// apply encrypts rec's personal fields with its subject's key. It
// returns an error when the key cannot be had: the caller then redacts
// those fields instead.
func (s *shredder) apply(rec *Record, now time.Time) error {
	if rec.Subject == "" {
		return nil
	}
	if now.Sub(s.loaded) > shredCacheTTL {
		clear(s.cache)
		s.loaded = now
	}
	id := s.keys.subjectID(rec.Subject)
	aead, ok := s.cache[id]
	if !ok {
		var err error
		if aead, err = s.keys.open(id, true); err != nil {
			return err
		}
		s.cache[id] = aead
	}
	rec.Subject = s.seal(aead, id, rec.Subject)
	for k, v := range rec.Headers {
		if s.headers[strings.ToLower(k)] {
			rec.Headers[k] = s.seal(aead, id, v)
		}
	}
	for k, v := range rec.Claims {
		if s.claims[k] {
			j, err := appendValue(s.buf[:0], v, 0)
			if err != nil {
				return err
			}
			rec.Claims[k] = s.seal(aead, id, string(j))
		}
	}
	return nil
}

func (s *shredder) seal(aead cipher.AEAD, id, v string) string {
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(v)+aead.Overhead())
	rand.Read(nonce)
	ct := aead.Seal(nonce, nonce, []byte(v), []byte(id))
	return ShredPrefix + id + ":" + base64.RawStdEncoding.EncodeToString(ct)
}

// redactPersonal is what apply's caller does when no subject key can be
// had: the personal fields become digests, never clear text.
func (s *shredder) redactPersonal(rec *Record, r *redactor) {
	rec.Subject = r.sum(rec.Subject)
	for k, v := range rec.Headers {
		if s.headers[strings.ToLower(k)] {
			rec.Headers[k] = r.sum(v)
		}
	}
	for k, v := range rec.Claims {
		if s.claims[k] {
			rec.Claims[k] = r.sumValue(v)
		}
	}
}

// tombstone is what Forget leaves for the logger to audit.
type tombstone struct {
	Subject string    `json:"subject_id"`
	Time    time.Time `json:"time"`
	By      string    `json:"by"`
	Reason  string    `json:"reason,omitempty"`
}

// tombstones lists the forgets not yet audited.
func (s *shredder) tombstones() ([]tombstone, []string) {
	names, _ := filepath.Glob(filepath.Join(s.keys.dir, "*"+tombstoneExt))
	var out []tombstone
	var paths []string
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			continue
		}
		var t tombstone
		if json.Unmarshal(b, &t) != nil || t.Subject == "" {
			t = tombstone{Subject: strings.TrimSuffix(filepath.Base(n), tombstoneExt)}
		}
		out = append(out, t)
		paths = append(paths, n)
	}
	return out, paths
}

// Forget destroys the key of a data subject in the key store at dir
// (opened with the encryption key), so that the subject's fields in every
// record become unreadable, and leaves a note that the running logger (or
// the next one to start) writes to the audit log as a subject_forgotten
// event. It returns the subject id the records name. Forgetting a subject
// with no key is not an error (nothing was recorded, or it was forgotten
// already); the forget is audited all the same.
func Forget(dir string, encryptionKey []byte, subject, reason string) (string, error) {
	master, err := decodeKey32(encryptionKey)
	if err != nil {
		return "", fmt.Errorf("audit forget: encryption key: %w", err)
	}
	keys, err := newSubjectKeys(dir, master)
	if err != nil {
		return "", err
	}
	id := keys.subjectID(subject)
	p := keys.path(id, subjectKeyExt)
	if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
		// Overwrite before removing: a file system that reuses the block
		// in place keeps no copy (copy-on-write and journaling ones may;
		// see docs/audit.md).
		fi, _ := f.Stat()
		if fi != nil {
			_, _ = f.WriteAt(make([]byte, fi.Size()), 0)
			_ = f.Sync()
		}
		_ = f.Close()
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return id, fmt.Errorf("audit forget: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the removal itself durable
		_ = d.Close()
	}
	by := "unknown"
	if u, err := user.Current(); err == nil {
		by = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		by += "@" + h
	}
	t, _ := json.Marshal(tombstone{Subject: id, Time: time.Now().UTC(), By: by, Reason: reason})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return id, err
	}
	if err := os.WriteFile(keys.path(id, tombstoneExt), append(t, '\n'), 0o600); err != nil {
		return id, fmt.Errorf("audit forget: key destroyed, but the note for the audit log was not written: %w", err)
	}
	return id, nil
}

// Unshredder decrypts shredded fields for reading.
type Unshredder struct {
	keys  *subjectKeys
	cache map[string]cipher.AEAD
}

// NewUnshredder opens the key store at dir with the encryption key.
func NewUnshredder(dir string, encryptionKey []byte) (*Unshredder, error) {
	master, err := decodeKey32(encryptionKey)
	if err != nil {
		return nil, fmt.Errorf("encryption key: %w", err)
	}
	keys, err := newSubjectKeys(dir, master)
	if err != nil {
		return nil, err
	}
	return &Unshredder{keys: keys, cache: map[string]cipher.AEAD{}}, nil
}

// Value decrypts one shredded value; a value whose key was destroyed
// becomes forgotten:<subject id>; other values are returned as they are.
func (u *Unshredder) Value(v string) string {
	rest, ok := strings.CutPrefix(v, ShredPrefix)
	if !ok {
		return v
	}
	id, b64, ok := strings.Cut(rest, ":")
	if !ok {
		return v
	}
	aead, ok := u.cache[id]
	if !ok {
		var err error
		aead, err = u.keys.open(id, false)
		if err != nil {
			aead = nil
		}
		u.cache[id] = aead
	}
	if aead == nil {
		return ForgottenPrefix + id
	}
	ct, err := base64.RawStdEncoding.DecodeString(b64)
	if err != nil || len(ct) < aead.NonceSize() {
		return v
	}
	pt, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], []byte(id))
	if err != nil {
		return v
	}
	return string(pt)
}

// Line decrypts the shredded fields of one record line (JSON), returning
// the line re-encoded; lines without any are returned as they are.
func (u *Unshredder) Line(line []byte) []byte {
	if !strings.Contains(string(line), `"`+ShredPrefix) {
		return line
	}
	var m map[string]any
	if json.Unmarshal(line, &m) != nil {
		return line
	}
	if s, ok := m["subject"].(string); ok {
		m["subject"] = u.Value(s)
	}
	if h, ok := m["headers"].(map[string]any); ok {
		for k, v := range h {
			if s, ok := v.(string); ok {
				h[k] = u.Value(s)
			}
		}
	}
	if c, ok := m["claims"].(map[string]any); ok {
		for k, v := range c {
			s, ok := v.(string)
			if !ok || !strings.HasPrefix(s, ShredPrefix) {
				continue
			}
			p := u.Value(s)
			var val any
			if json.Unmarshal([]byte(p), &val) == nil {
				c[k] = val
			} else {
				c[k] = p
			}
		}
	}
	out, err := json.Marshal(m)
	if err != nil {
		return line
	}
	return out
}

// auditForgets writes a subject_forgotten event for each forget noted in
// the key store, then removes the note once every sink wrote it (a sink
// failing meanwhile gets the event again later: at least once).
func (l *Logger) auditForgets() {
	if l.shred == nil || l.red == nil || l.now().Sub(l.lastTombs) < shredCacheTTL {
		return
	}
	l.lastTombs = l.now()
	ts, paths := l.shred.tombstones()
	for i, t := range ts {
		delete(l.shred.cache, t.Subject) // the key is gone: never use it again
		d := map[string]string{"subject_id": t.Subject, "by": t.By, "forgotten_at": t.Time.Format(time.RFC3339Nano)}
		if t.Reason != "" {
			d["reason"] = t.Reason
		}
		l.writeBatch([]*Record{{Kind: KindSubjectForgotten, Time: l.now(), Message: "data subject's key destroyed (audit forget)", Detail: d}})
		if !l.unhealthy.Load() {
			if err := os.Remove(paths[i]); err != nil {
				l.log.Error("audit: remove a forget note", logError, err)
			}
		}
	}
}
