package audit

import (
	"bufio"
	"bytes"
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
}

// verifier checks one stream of files in order.
type verifier struct {
	s       Summary
	last    map[string]uint64 // last seq by process
	denied  map[string]int
	reasons map[string]int
}

func newVerifier() *verifier {
	return &verifier{
		s:       Summary{Kinds: map[string]int{}, Decisions: map[string]int{}},
		last:    map[string]uint64{},
		denied:  map[string]int{},
		reasons: map[string]int{},
	}
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
		default:
			v.record(line, name, n)
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

func (v *verifier) record(line []byte, name string, n int) {
	var l verifyLine
	if len(bytes.TrimSpace(line)) == 0 {
		v.problem("%s:%d: empty line", name, n)
		return
	}
	if err := json.Unmarshal(line, &l); err != nil {
		v.problem("%s:%d: not a JSON record: %v", name, n, err)
		return
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
		return
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
		return
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
}

func (v *verifier) summary() (*Summary, error) {
	s := v.s
	s.Processes = len(v.last)
	s.TopDenied = top(v.denied)
	s.TopReasons = top(v.reasons)
	if s.ProblemCount > 0 {
		return &s, fmt.Errorf("%w: %d", ErrInvalidLog, s.ProblemCount)
	}
	return &s, nil
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
	v := newVerifier()
	if err := v.add(r, "input"); err != nil {
		return nil, err
	}
	return v.summary()
}

// VerifyFiles verifies files as one log, in the order given: rotated files
// oldest first (see RotatedFiles), then the current file.
func VerifyFiles(paths ...string) (*Summary, error) {
	v := newVerifier()
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
