package audit

import (
	"bufio"
	"bytes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"
)

// ErrInvalidLog is returned by Verify when the log has any problem.
var ErrInvalidLog = errors.New("audit log has problems")

// Verify limits.
const (
	MaxLineSize = 16 << 20 // longer lines are a problem
	MaxProblems = 100      // problems kept in Summary.Problems
	TopN        = 10       // entries in the Top lists
)

// Count is a value and how often it occurs.
type Count struct {
	Value string
	Count int
}

// Summary is what Verify found in a log.
type Summary struct {
	Lines     int            // lines read, good or not
	Records   int            // lines that are valid records
	Processes int            // distinct process nonces (runs)
	Kinds     map[string]int // records by kind
	Decisions map[string]int // records of a decision (kinds decision, authz_denial, authn_failure) by result (allow, deny, error)
	// TopDenied are the principals with the most deny or error decisions.
	TopDenied []Count
	// TopReasons are the most frequent reason codes of deny and error
	// decisions (an allow's "allowed" is not a reason to look into).
	TopReasons []Count
	// TornTail is set when a file's last line has no newline: the writer
	// died in the middle of a write (the next start removes it).
	TornTail bool
	// Problems are the first MaxProblems problems; ProblemCount counts all.
	Problems     []string
	ProblemCount int

	// Segments and Seals count the meta lines of chained (file sink) logs.
	Segments, Seals int
	// Unchained counts records before any segment header (written before
	// chaining existed): only their seq is checked.
	Unchained int
	// Encrypted counts records that were decrypted; Unreadable those that
	// could not be (no key given).
	Encrypted, Unreadable int
	// Unsealed counts records after the last seal.
	Unsealed int
	// Complete is set when the log ends with the seal a clean shutdown or
	// a rotation writes, covering every record.
	Complete bool
	// Anchor is the chain head the first segment continues from (records
	// before it, in older files, were not given); "" when the chain
	// starts in the files given. Head is the hash of the last record line.
	Anchor, Head string
	// SealsChecked is set when a seal key was given and every header and
	// seal was signed with it.
	SealsChecked bool
	// Warnings are findings that do not fail verification, such as a
	// process that ended without a final seal (a crash) before the next
	// one started.
	Warnings []string
}

// VerifyOptions are the keys and clock Verify uses.
type VerifyOptions struct {
	// Seal checks the signatures of headers and seals; nil: not checked
	// (a warning), and unchained records are then allowed.
	Seal *SealVerifier
	// EncryptionKey decrypts encrypted segments (32 bytes, raw, hex or
	// base64).
	EncryptionKey []byte
	// Now is the clock that tells a live log from one whose newest
	// records were removed. Default time.Now.
	Now func() time.Time
	// Record, if set, is called with the plaintext JSON of every record
	// line (decrypted), in order, e.g. by `audit read`.
	Record func(line []byte)
}

// verifier checks one stream of files in order.
type verifier struct {
	s       Summary
	opts    VerifyOptions
	encKey  []byte
	encID   string
	last    map[string]uint64 // last seq by process
	denied  map[string]int
	reasons map[string]int

	// The chain.
	head     [32]byte
	hasHead  bool
	seg      *metaLine   // the current segment's header
	aead     cipher.AEAD // its decryption, nil when plain or no key
	segNoKey bool
	every    time.Duration
	lastSeal time.Time // or the header's time before the first seal
	sealEnd  string
	signed   int // meta lines with a sig
	unsigned int
	keyErr   error
}

func newVerifier(opts VerifyOptions) *verifier {
	v := &verifier{
		s:       Summary{Kinds: map[string]int{}, Decisions: map[string]int{}},
		opts:    opts,
		last:    map[string]uint64{},
		denied:  map[string]int{},
		reasons: map[string]int{},
	}
	if v.opts.Now == nil {
		v.opts.Now = time.Now
	}
	if opts.EncryptionKey != nil {
		v.encKey, v.keyErr = decodeKey32(opts.EncryptionKey)
		if v.keyErr == nil {
			v.encID = macKeyID(v.encKey)
		}
	}
	return v
}

func (v *verifier) warn(format string, args ...any) {
	if len(v.s.Warnings) < MaxProblems {
		v.s.Warnings = append(v.s.Warnings, fmt.Sprintf(format, args...))
	}
}

// meta checks a segment header or a seal against the chain.
func (v *verifier) meta(line []byte, name string, n int) {
	m, signed, err := parseMeta(line)
	if err != nil {
		v.problem("%s:%d: not a meta line: %v", name, n, err)
		return
	}
	if m.Sig != "" {
		v.signed++
	} else {
		v.unsigned++
	}
	if vs := v.opts.Seal; vs != nil {
		switch {
		case m.Sig == "":
			v.problem("%s:%d: %s is not signed", name, n, m.Meta)
		case m.SealKeyID != vs.s.id || m.Alg != vs.s.alg:
			v.problem("%s:%d: %s signed with %s key %s, not the given %s key %s", name, n, m.Meta, m.Alg, m.SealKeyID, vs.s.alg, vs.s.id)
		case !vs.s.verify(signed, m.Sig):
			v.problem("%s:%d: %s signature does not verify: the line was changed", name, n, m.Meta)
		}
	}
	head := ""
	if v.hasHead {
		head = hex.EncodeToString(v.head[:])
	}
	switch m.Meta {
	case metaSegment:
		v.s.Segments++
		if v.seg == nil && v.s.Records+v.s.Unreadable == 0 && v.s.Lines == v.s.Segments+v.s.Seals {
			// The first line of the log: the chain continues from here.
			v.s.Anchor = m.Head
			if m.Head != "" {
				if b, err := hex.DecodeString(m.Head); err == nil && len(b) == 32 {
					copy(v.head[:], b)
					v.hasHead = true
				}
			}
		} else if m.Head != head {
			v.problem("%s:%d: chain broken: segment continues from %s but the record before it hashes to %s (records removed, reordered or changed, or a segment of another log)", name, n, short(m.Head), short(head))
		}
		if v.seg != nil && m.Process != v.seg.Process && !v.closed() {
			v.warn("%s:%d: process %s ended without a final seal (killed?): %d records after its last seal at %s", name, n, v.seg.Process, v.s.Unsealed, v.lastSeal.Format(time.RFC3339))
		}
		v.seg, v.aead, v.segNoKey = m, nil, false
		v.every, _ = time.ParseDuration(m.Every)
		// Records after the last seal stay unsealed until the next seal,
		// whichever process writes it: a seal covers the whole chain.
		v.lastSeal, v.sealEnd = m.Time, ""
		if m.Enc != "" {
			v.startDecrypt(m, name, n)
		}
	case metaSeal:
		v.s.Seals++
		if v.seg == nil {
			v.problem("%s:%d: seal before any segment header", name, n)
		} else if m.Process != v.seg.Process {
			v.problem("%s:%d: seal of process %s in a segment of process %s", name, n, m.Process, v.seg.Process)
		}
		if m.Head != head {
			v.problem("%s:%d: seal covers %s but the last record hashes to %s (records after the seal's point changed, removed or added)", name, n, short(m.Head), short(head))
		}
		v.lastSeal, v.sealEnd, v.s.Unsealed = m.Time, m.End, 0
	}
}

func (v *verifier) closed() bool {
	return v.s.Unsealed == 0 && (v.sealEnd == sealEndClose || v.sealEnd == sealEndRotate)
}

func (v *verifier) startDecrypt(m *metaLine, name string, n int) {
	switch {
	case m.Enc != EncAES256GCM:
		v.problem("%s:%d: unknown encryption %q", name, n, m.Enc)
	case v.keyErr != nil:
		v.problem("%s:%d: encryption key: %v", name, n, v.keyErr)
	case v.encKey == nil:
		v.problem("%s:%d: segment encrypted with key id %s and no encryption key given: its records cannot be checked", name, n, m.KeyID)
	case m.KeyID != v.encID:
		v.problem("%s:%d: segment encrypted with key id %s, not the given key's %s", name, n, m.KeyID, v.encID)
	default:
		salt, err := hex.DecodeString(m.Salt)
		if err != nil || len(salt) == 0 {
			v.problem("%s:%d: bad salt", name, n)
			break
		}
		if v.aead, err = segmentKey(v.encKey, salt); err != nil {
			v.problem("%s:%d: %v", name, n, err)
		}
		return
	}
	v.segNoKey = true
}

func short(h string) string {
	if h == "" {
		return "(nothing)"
	}
	if len(h) > 16 {
		return h[:16]
	}
	return h
}

func (v *verifier) problem(format string, args ...any) {
	v.s.ProblemCount++
	if len(v.s.Problems) < MaxProblems {
		v.s.Problems = append(v.s.Problems, fmt.Sprintf(format, args...))
	}
}

type verifyLine struct {
	Kind      string    `json:"kind"`
	Time      time.Time `json:"time"`
	Seq       uint64    `json:"seq"`
	Process   string    `json:"process"`
	Decision  string    `json:"decision"`
	Principal string    `json:"principal"`
	Reason    string    `json:"reason"`
	Prev      *string   `json:"prev"`
}

// add reads one file (name is used in problems).
func (v *verifier) add(r io.Reader, name string) error {
	br := bufio.NewReaderSize(r, 256<<10)
	n := 0
	for {
		line, complete, tooLong, err := readLine(br)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("verify %s: %w", name, err)
		}
		if len(line) == 0 && !tooLong && errors.Is(err, io.EOF) {
			return nil
		}
		n++
		v.s.Lines++
		switch {
		case tooLong:
			v.problem("%s:%d: line longer than %d bytes", name, n, MaxLineSize)
		case !complete:
			v.s.TornTail = true
			v.problem("%s:%d: torn last line (%d bytes, no newline): the writer died mid-write", name, n, len(line))
		case bytes.HasPrefix(line, []byte(metaPrefix)):
			v.meta(line, name, n)
		default:
			v.chained(line, name, n)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
	}
}

// readLine reads up to and including '\n'. complete is false when the
// input ended first.
func readLine(br *bufio.Reader) (line []byte, complete, tooLong bool, err error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong {
			if len(buf)+len(chunk) > MaxLineSize {
				tooLong, buf = true, nil
			} else {
				buf = append(buf, chunk...)
			}
		}
		switch {
		case err == nil:
			return bytes.TrimSuffix(buf, []byte("\n")), true, tooLong, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return buf, false, tooLong, err
		}
	}
}

// chained checks a record line against the chain, decrypting it first
// in an encrypted segment.
func (v *verifier) chained(raw []byte, name string, n int) {
	line := raw
	if v.seg != nil && v.seg.Enc != "" {
		if v.aead == nil {
			v.s.Unreadable++
			v.s.Unsealed++
			v.head, v.hasHead = lineHash(raw), true
			return
		}
		p, err := decryptLine(v.aead, raw)
		if err != nil {
			v.problem("%s:%d: encrypted record %v", name, n, err)
			v.head, v.hasHead = lineHash(raw), true
			return
		}
		v.s.Encrypted++
		line = p
	}
	prev, ok := v.record(line, name, n)
	if v.seg == nil {
		if prev != "" {
			v.problem("%s:%d: a chained record before any segment header (the header was removed?)", name, n)
		} else if ok {
			v.s.Unchained++
		}
	} else {
		want := ""
		if v.hasHead {
			want = hex.EncodeToString(v.head[:])
		}
		if prev != want {
			v.problem("%s:%d: chain broken: prev %s, but the line before hashes to %s (a record changed, removed or reordered)", name, n, short(prev), short(want))
		}
		v.s.Unsealed++
	}
	v.head, v.hasHead = lineHash(raw), true
	if ok && v.opts.Record != nil {
		v.opts.Record(line)
	}
}

func (v *verifier) record(line []byte, name string, n int) (prev string, ok bool) {
	var l verifyLine
	if len(bytes.TrimSpace(line)) == 0 {
		v.problem("%s:%d: empty line", name, n)
		return "", false
	}
	if err := json.Unmarshal(line, &l); err != nil {
		v.problem("%s:%d: not a JSON record: %v", name, n, err)
		return "", false
	}
	if l.Prev != nil {
		prev = *l.Prev
	}
	bad := false
	if l.Kind == "" {
		v.problem("%s:%d: no kind", name, n)
		bad = true
	}
	if l.Time.IsZero() {
		v.problem("%s:%d: no time", name, n)
		bad = true
	}
	if l.Process == "" || l.Seq == 0 {
		v.problem("%s:%d: no process or seq", name, n)
		return prev, false
	}
	if last, ok := v.last[l.Process]; ok && l.Seq != last+1 {
		if l.Seq <= last {
			v.problem("%s:%d: process %s: seq %d repeats or goes back (after %d)", name, n, l.Process, l.Seq, last)
		} else {
			v.problem("%s:%d: process %s: gap: seq %d after %d (%d records missing)", name, n, l.Process, l.Seq, last, l.Seq-last-1)
		}
	}
	v.last[l.Process] = l.Seq
	if bad {
		return prev, false
	}
	v.s.Records++
	v.s.Kinds[l.Kind]++
	if l.Decision != "" {
		v.s.Decisions[l.Decision]++
	}
	if l.Decision == "deny" || l.Decision == "error" {
		p := l.Principal
		if p == "" {
			p = "(none)"
		}
		v.denied[p]++
		if l.Reason != "" {
			v.reasons[l.Reason]++
		}
	}
	return prev, true
}

func (v *verifier) summary() (*Summary, error) {
	v.end()
	s := v.s
	s.Processes = len(v.last)
	s.TopDenied = top(v.denied)
	s.TopReasons = top(v.reasons)
	if s.ProblemCount > 0 {
		return &s, fmt.Errorf("%w: %d", ErrInvalidLog, s.ProblemCount)
	}
	return &s, nil
}

// end checks how the log ends: with the seal of a clean shutdown or a
// rotation, or (a live writer) with a seal younger than two intervals.
func (v *verifier) end() {
	if v.hasHead {
		v.s.Head = hex.EncodeToString(v.head[:])
	}
	if v.opts.Seal != nil && v.s.Unchained > 0 {
		v.problem("%d records carry no hash chain (before any segment header)", v.s.Unchained)
	}
	if v.seg == nil {
		return
	}
	v.s.SealsChecked = v.opts.Seal != nil && v.unsigned == 0
	switch {
	case v.opts.Seal == nil && v.signed > 0:
		v.warn("seals are signed but no seal key was given: signatures not checked")
	case v.opts.Seal == nil:
		v.warn("seals are not signed (no seal key configured): the chain shows accidental damage, not a rewrite by someone who can recompute it")
	}
	v.s.Complete = v.closed()
	if v.s.Complete {
		return
	}
	slack := 2*v.every + 5*time.Second
	if age := v.opts.Now().Sub(v.lastSeal); age > slack {
		v.problem("the log ends without a final seal; its last seal is from %s, %d records after it: the writer was killed, or the newest records were removed", v.lastSeal.Format(time.RFC3339), v.s.Unsealed)
	} else {
		v.warn("%d records after the last seal at %s: the writer looks live (seals every %s)", v.s.Unsealed, v.lastSeal.Format(time.RFC3339), v.every)
	}
}

func top(m map[string]int) []Count {
	out := make([]Count, 0, len(m))
	for k, n := range m {
		out = append(out, Count{k, n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Value < out[j].Value
	})
	if len(out) > TopN {
		out = out[:TopN]
	}
	return out
}

// Verify checks an audit log: every line is a whole JSON record with a
// kind, a time, a process and a seq, and within each process the seq
// goes up by one from line to line (the first seq of a process may be any,
// since older lines may have been rotated away). It returns the summary
// and, when anything is wrong, an error wrapping ErrInvalidLog; the
// problems are in the summary.
func Verify(r io.Reader) (*Summary, error) {
	return VerifyWith(VerifyOptions{}, r)
}

// VerifyWith is Verify with keys.
func VerifyWith(opts VerifyOptions, r io.Reader) (*Summary, error) {
	v := newVerifier(opts)
	if err := v.add(r, "input"); err != nil {
		return nil, err
	}
	return v.summary()
}

// VerifyFiles verifies files as one log, in the order given: rotated files
// oldest first (see RotatedFiles), then the current file.
func VerifyFiles(paths ...string) (*Summary, error) {
	return VerifyFilesWith(VerifyOptions{}, paths...)
}

// VerifyFilesWith is VerifyFiles with keys.
func VerifyFilesWith(opts VerifyOptions, paths ...string) (*Summary, error) {
	v := newVerifier(opts)
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		err = v.add(f, p)
		_ = f.Close() // read-only
		if err != nil {
			return nil, err
		}
	}
	return v.summary()
}
