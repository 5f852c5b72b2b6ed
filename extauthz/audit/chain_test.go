package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	sealKey = []byte("0123456789abcdef-seal-key")
	encKey  = bytes.Repeat([]byte{7}, 32)
)

// writeRuns writes runs of n records to path, one logger (one process)
// per run, each stopped cleanly.
func writeRuns(t *testing.T, path string, opts []Option, runs ...int) {
	t.Helper()
	zero := 0
	for _, n := range runs {
		l := start(t, Config{BatchSize: 1, Sinks: []SinkConfig{{Type: "file", Path: path, MaxFiles: &zero}}}, opts...)
		for i := range n {
			if err := l.Audit(decision(i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.stop(); err != nil {
			t.Fatal(err)
		}
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l := strings.SplitAfter(string(b), "\n")
	return l[:len(l)-1] // after the last newline
}

// records returns the indexes of record lines (not meta lines).
func records(lines []string) []int {
	var out []int
	for i, l := range lines {
		if !strings.HasPrefix(l, metaPrefix) {
			out = append(out, i)
		}
	}
	return out
}

func without(lines []string, drop ...int) []string {
	var out []string
next:
	for i, l := range lines {
		for _, d := range drop {
			if i == d {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// flip changes one character in the middle of a line, keeping JSON valid
// when the line is plain (a digit of the decision id) or changing one
// base64 character when it is encrypted.
func flip(l string) string {
	if i := strings.Index(l, `"decision_id":"d`); i >= 0 {
		j := i + len(`"decision_id":"d`)
		return l[:j] + "9" + l[j:]
	}
	b := []byte(l)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// TestTamper: every way of changing a sealed log is found, with the seal
// key, in plain and in encrypted logs; the one it cannot find (cutting the
// log back to an earlier clean shutdown) is listed as such.
func TestTamper(t *testing.T) {
	sv, err := NewSealVerifier(SealHMAC, sealKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, encrypted := range []bool{false, true} {
		name := "plain"
		opts := []Option{WithSealKey(sealKey)}
		vopts := VerifyOptions{Seal: sv, Now: func() time.Time { return time.Now().Add(time.Hour) }}
		if encrypted {
			name = "encrypted"
			opts = append(opts, WithEncryptionKey(encKey))
			vopts.EncryptionKey = encKey
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			pathA, pathB := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
			writeRuns(t, pathA, opts, 5, 5) // hdr r r r r r seal | hdr r r r r r seal
			writeRuns(t, pathB, opts, 5)
			a, b := readLines(t, pathA), readLines(t, pathB)
			ra := records(a)
			if len(a) != 14 || len(ra) != 10 {
				t.Fatalf("log a has %d lines, %d records: %q", len(a), len(ra), a)
			}
			if encrypted && strings.Contains(strings.Join(a, ""), "spiffe://") {
				t.Fatal("an encrypted log holds a principal in clear")
			}
			last := len(a) - 1 // the final seal
			set := func(i int, s string) []string {
				c := append([]string(nil), a...)
				c[i] = s
				return c
			}
			swap := func(i, j int) []string {
				c := append([]string(nil), a...)
				c[i], c[j] = c[j], c[i]
				return c
			}
			otherKey, _ := newSealer(SealHMAC, []byte("another-seal-key-0123"))
			forged := func(i int, edit func(*metaLine)) string {
				m, _, err := parseMeta([]byte(strings.TrimSuffix(a[i], "\n")))
				if err != nil {
					t.Fatal(err)
				}
				edit(m)
				return string(appendMeta(nil, m, otherKey))
			}
			tests := []struct {
				name     string
				lines    []string
				want     string // in some problem; "" for none
				detected bool
			}{
				{name: "intact", lines: a, detected: false},
				{name: "edit a middle record", lines: set(ra[2], flip(a[ra[2]])), want: "", detected: true},
				{name: "edit the newest record", lines: set(ra[9], flip(a[ra[9]])), want: "", detected: true},
				{name: "delete a middle record", lines: without(a, ra[3]), want: "chain broken", detected: true},
				{name: "delete the newest record", lines: without(a, ra[9]), want: "seal covers", detected: true},
				{name: "delete the tail and its seal", lines: without(a, ra[8], ra[9], last), want: "without a final seal", detected: true},
				{name: "delete the final seal", lines: without(a, last), want: "without a final seal", detected: true},
				{name: "reorder two records", lines: swap(ra[1], ra[2]), want: "chain broken", detected: true},
				{name: "reorder the two runs", lines: append(append([]string(nil), a[7:]...), a[:7]...), want: "chain broken", detected: true},
				{name: "replay another log's segment", lines: append(append([]string(nil), a[:7]...), b...), want: "chain broken", detected: true},
				{name: "forge a seal with another key", lines: set(last, forged(last, func(*metaLine) {})), want: "not the given", detected: true},
				{name: "edit a seal", lines: set(last, strings.Replace(a[last], `"end":"close"`, `"end":"rotate"`, 1)), want: "signature does not verify", detected: true},
				{name: "append a record of another log", lines: append(append([]string(nil), a...), b[1]), want: "", detected: true},
				// What the chain cannot show: a log cut back to an earlier
				// clean shutdown ends as a whole log does (see docs/audit.md).
				{name: "cut back to an earlier clean shutdown (not detectable)", lines: a[:7], detected: false},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					s, err := VerifyWith(vopts, strings.NewReader(strings.Join(tc.lines, "")))
					if s == nil {
						t.Fatal(err)
					}
					if got := s.ProblemCount > 0; got != tc.detected {
						t.Fatalf("detected = %v, want %v; problems %q", got, tc.detected, s.Problems)
					}
					if tc.want != "" && !strings.Contains(strings.Join(s.Problems, "\n"), tc.want) {
						t.Errorf("no problem mentions %q: %q", tc.want, s.Problems)
					}
					if !tc.detected && (!s.Complete || !s.SealsChecked) {
						t.Errorf("an intact log: complete %v, seals checked %v, warnings %q", s.Complete, s.SealsChecked, s.Warnings)
					}
				})
			}
		})
	}
}

// TestChainAcrossRotationAndRestart: the chain runs through rotated files
// and through restarts; each file alone verifies from its anchor.
func TestChainAcrossRotationAndRestart(t *testing.T) {
	path := tempLog(t)
	opts := []Option{WithSealKey(sealKey), WithEncryptionKey(encKey), withMaxBytes(4096)}
	writeRuns(t, path, opts, 30, 30)
	rotated, err := RotatedFiles(path)
	if err != nil || len(rotated) < 2 {
		t.Fatalf("rotated %v %v", rotated, err)
	}
	sv, _ := NewSealVerifier(SealHMAC, sealKey)
	vopts := VerifyOptions{Seal: sv, EncryptionKey: encKey}
	all := append(rotated, path)
	s, err := VerifyFilesWith(vopts, all...)
	if err != nil || s.Records != 60 || !s.Complete || s.Anchor != "" || s.Encrypted != 60 {
		t.Fatalf("all files: %v %+v", err, s)
	}
	for _, f := range all {
		if s, err := VerifyFilesWith(vopts, f); err != nil || !s.Complete {
			t.Errorf("%s alone: %v %q", f, err, s.Problems)
		}
	}
	// A file left out of the middle breaks the chain.
	if _, err := VerifyFilesWith(vopts, without(all, 1)...); err == nil {
		t.Error("a rotated file left out: no problem")
	}
	// Without the key an encrypted log cannot be checked.
	if s, err := VerifyFilesWith(VerifyOptions{Seal: sv}, all...); err == nil || s.Unreadable != 60 {
		t.Errorf("no encryption key: %v %+v", err, s)
	}
	other := bytes.Repeat([]byte{8}, 32)
	if s, err := VerifyFilesWith(VerifyOptions{Seal: sv, EncryptionKey: base64.StdEncoding.AppendEncode(nil, other)}, path); err == nil || !strings.Contains(s.Problems[0], "not the given key") {
		t.Errorf("wrong encryption key: %v %q", err, s.Problems)
	}
}

// TestSealEd25519: seals signed with an Ed25519 seed verify with the
// public key alone.
func TestSealEd25519(t *testing.T) {
	path := tempLog(t)
	seed := bytes.Repeat([]byte{3}, 32)
	l := start(t, Config{Seal: Seal{Algorithm: SealEd25519}, Sinks: []SinkConfig{{Type: "file", Path: path}}}, WithSealKey(seed))
	for i := range 3 {
		if err := l.Audit(decision(i)); err != nil {
			t.Fatal(err)
		}
	}
	l.stop()
	pub, err := SealPublicKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := NewSealVerifier(SealEd25519, []byte(pub))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := VerifyFilesWith(VerifyOptions{Seal: sv}, path); err != nil || !s.SealsChecked || s.Records != 3 {
		t.Fatalf("%v %+v", err, s)
	}
	hm, _ := NewSealVerifier(SealHMAC, sealKey)
	if _, err := VerifyFilesWith(VerifyOptions{Seal: hm}, path); err == nil {
		t.Error("verified with an HMAC key")
	}
}

// TestPeriodicSeal: a running logger seals every interval, idle or not,
// so a live log's newest records are covered within the interval.
func TestPeriodicSeal(t *testing.T) {
	path := tempLog(t)
	l := start(t, Config{Seal: Seal{Interval: Duration(time.Second)}, Sinks: []SinkConfig{{Type: "file", Path: path}}}, WithSealKey(sealKey))
	if err := l.Audit(decision(1)); err != nil {
		t.Fatal(err)
	}
	sv, _ := NewSealVerifier(SealHMAC, sealKey)
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := VerifyFilesWith(VerifyOptions{Seal: sv}, path)
		if s == nil || s.TornTail { // not created yet, or read mid-write
			s = &Summary{}
		} else if err != nil {
			t.Fatalf("live log: %v %q", err, s.Problems)
		}
		if s.Seals >= 2 && s.Unsealed == 0 && s.Records == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no periodic seals: %+v", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.stop()
}

// TestChainKeysFailClosed: a keySecret without a source is refused by New,
// and a key source that fails (or gives a bad key) stops Run from
// starting, so nothing is written unsealed or in clear by mistake.
func TestChainKeysFailClosed(t *testing.T) {
	path := tempLog(t)
	if _, err := New(Config{Seal: Seal{KeySecret: "s"}, Sinks: []SinkConfig{{Type: "file", Path: path}}}); err == nil || !strings.Contains(err.Error(), "seal.keySecret") {
		t.Errorf("seal.keySecret without a source: %v", err)
	}
	if _, err := New(Config{Encryption: Encryption{KeySecret: "s"}, Sinks: []SinkConfig{{Type: "file", Path: path}}}); err == nil || !strings.Contains(err.Error(), "encryption.keySecret") {
		t.Errorf("encryption.keySecret without a source: %v", err)
	}
	if _, err := New(Config{Encryption: Encryption{KeyFile: filepath.Join(t.TempDir(), "nope")}}); err == nil {
		t.Error("a missing encryption.keyFile: no error")
	}
	failing := func(context.Context) ([]byte, error) { return nil, errors.New("vault sealed") }
	short := func(context.Context) ([]byte, error) { return []byte("short"), nil }
	for name, opt := range map[string]Option{
		"seal source fails":       WithSealKeySource(failing),
		"encryption source fails": WithEncryptionKeySource(failing),
		"short seal key":          WithSealKeySource(short),
		"short encryption key":    WithEncryptionKeySource(short),
	} {
		t.Run(name, func(t *testing.T) {
			l, err := New(fileConfig(path), WithHMACKey(testKey), opt)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := l.Run(ctx); err == nil {
				t.Fatal("Run started")
			}
			if err := l.Audit(decision(1)); !errors.Is(err, ErrClosed) {
				t.Errorf("Audit after a failed start = %v, want ErrClosed", err)
			}
		})
	}
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		t.Errorf("a logger that did not start wrote %q", b)
	}
}
