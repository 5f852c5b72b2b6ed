package audit

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// sink is one destination. Its methods are called by the Run goroutine only.
type sink interface {
	name() string
	// open prepares the sink; torn is the size of an incomplete last line
	// that was removed (a crash in the middle of a write).
	open() (torn int64, err error)
	// write writes whole lines with one write: on error nothing of p
	// stays written, as far as the sink can ensure it.
	write(p []byte) error
	// flush makes writes durable as the sink's policy says; force ignores
	// the interval.
	flush(force bool) error
	close() error
	// warning returns and clears a problem that did not stop writing,
	// such as a rotated file that could not be removed.
	warning() error
}

// writerSink writes to an io.Writer such as stdout. A short write to a
// pipe cannot be undone, so a reader of stdout may see a torn line if the
// process dies mid-write; the file sink is the one that guarantees lines.
type writerSink struct {
	label string
	w     io.Writer
}

func (s *writerSink) name() string           { return s.label }
func (s *writerSink) open() (int64, error)   { return 0, nil }
func (s *writerSink) flush(force bool) error { return nil }
func (s *writerSink) close() error           { return nil }
func (s *writerSink) warning() error         { return nil }

func (s *writerSink) write(p []byte) error {
	n, err := s.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	return err
}

// fileSink appends to a file (mode 0600), rotating it by size and pruning
// rotated files by count and age.
type fileSink struct {
	path     string
	maxBytes int64
	maxFiles int // 0: no limit
	maxAge   time.Duration
	fsync    string
	interval time.Duration
	now      func() time.Time

	f        *os.File
	regular  bool
	size     int64
	recs     int // record lines written since the file was opened
	dirty    bool
	lastSync time.Time
	warn     error

	// export: the lines are OCSF events (format: ocsf), written with no
	// segment header, seal, chain or encryption.
	export bool

	// The hash chain, seals and encryption (see chain.go).
	process  string
	sealer   *sealer // nil: seals are not signed
	every    time.Duration
	encKey   []byte // nil: records are not encrypted
	keyID    string
	enc      *encrypter
	salt     []byte
	found    bool     // head looked up from the files on disk
	head     [32]byte // hash of the last line framed
	hasHead  bool     // false until the chain has a first record
	seq      uint64   // seq of the last line framed
	wHead    [32]byte // head, wHasHead, wSeq of what is written
	wHasHead bool
	wSeq     uint64
	mHead    [32]byte // head, hasHead and seq before the current batch
	mHasHead bool
	mSeq     uint64
	opening  string // why the next open happens: start, rotate, reopen
	lastSeal time.Time
	plain    []byte
	metaBuf  []byte
	hdr      []byte // segment header not yet written
	joinBuf  []byte
}

// metaReserve is room kept under maxBytes for the seal that ends a file.
const metaReserve = 1024

func newFileSink(c SinkConfig, now func() time.Time) *fileSink {
	s := &fileSink{
		path:     c.Path,
		maxBytes: int64(c.MaxSizeMB) << 20,
		maxAge:   time.Duration(c.MaxAge),
		fsync:    c.Fsync,
		interval: time.Duration(c.FsyncInterval),
		now:      now,
		opening:  "start",
	}
	if c.MaxFiles != nil {
		s.maxFiles = *c.MaxFiles
	}
	return s
}

func (s *fileSink) name() string { return "file:" + s.path }

func (s *fileSink) open() (int64, error) {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close() // the Stat error is the one to report
		return 0, err
	}
	s.f, s.regular, s.size, s.recs = f, fi.Mode().IsRegular(), fi.Size(), 0
	var torn int64
	if s.regular {
		if fi.Mode().Perm() != 0o600 {
			if err := f.Chmod(0o600); err != nil {
				_ = s.closeFile() // the Chmod error is the one to report
				return 0, err
			}
		}
		if torn, err = s.repairTail(); err != nil {
			_ = s.closeFile()
			return 0, fmt.Errorf("repair torn last line: %w", err)
		}
		if err := s.prune(); err != nil {
			s.warn = fmt.Errorf("prune rotated files: %w", err)
		}
	}
	if err := s.startSegment(); err != nil {
		_ = s.closeFile()
		return 0, err
	}
	return torn, nil
}

// startSegment writes the header of a segment: the chain head it
// continues from (looked up in the files at the first open) and how its
// records are encrypted.
func (s *fileSink) startSegment() error {
	if s.export {
		return nil
	}
	if !s.found {
		s.found = true
		if s.regular {
			h, ok, err := lastRecordHash(s.f, s.size)
			if err == nil && !ok {
				h, ok, err = lastRotatedHash(s.path)
			}
			if err != nil {
				return fmt.Errorf("read the chain head: %w", err)
			}
			s.head, s.hasHead = h, ok
			s.wHead, s.wHasHead = h, ok
		}
	}
	if s.encKey != nil && s.enc == nil {
		s.salt = make([]byte, 16)
		rand.Read(s.salt)
		aead, err := segmentKey(s.encKey, s.salt)
		if err != nil {
			return err
		}
		s.enc = &encrypter{aead: aead}
	}
	m := &metaLine{Meta: metaSegment, Time: s.now().UTC(), Process: s.process, Open: s.opening, Every: s.every.String()}
	if s.wHasHead {
		m.Head = hex.EncodeToString(s.wHead[:])
	}
	if s.enc != nil {
		m.Enc, m.KeyID, m.Salt = EncAES256GCM, s.keyID, hex.EncodeToString(s.salt)
	}
	s.opening = "reopen"
	s.lastSeal = s.now()
	// Written with the next write, so that a file that cannot be written
	// fails there (and is retried) rather than at open.
	s.hdr = appendMeta(s.hdr[:0], m, s.sealer)
	return nil
}

func (s *fileSink) writeMeta(m *metaLine) error {
	s.metaBuf = appendMeta(s.metaBuf[:0], m, s.sealer)
	return s.writeRaw(s.metaBuf, 0)
}

// writeRaw writes p (the pending header first) with one write, taking
// back a partial write; recs is the number of record lines in p.
func (s *fileSink) writeRaw(p []byte, recs int) error {
	if len(s.hdr) > 0 {
		s.joinBuf = append(append(s.joinBuf[:0], s.hdr...), p...)
		p = s.joinBuf
	}
	n, err := s.f.Write(p)
	if err != nil {
		if n > 0 && s.regular {
			// Take back the part that was written, so that no torn line
			// stays in the middle of the file and the retry does not
			// duplicate records.
			if terr := s.f.Truncate(s.size); terr != nil {
				_ = s.closeFile() // reopened by the next write; the errors below are the ones to report
				return errors.Join(err, fmt.Errorf("take back a partial write: %w", terr))
			}
		}
		return err
	}
	s.hdr = s.hdr[:0]
	s.size += int64(n)
	s.recs += recs
	s.dirty = true
	return nil
}

// seal writes a seal over what is written; end is "", rotate or close.
func (s *fileSink) seal(end string) error {
	if s.f == nil || s.export {
		return nil
	}
	m := &metaLine{Meta: metaSeal, Time: s.now().UTC(), Process: s.process, Seq: s.wSeq, End: end}
	if s.wHasHead {
		m.Head = hex.EncodeToString(s.wHead[:])
	}
	s.lastSeal = s.now()
	return s.writeMeta(m)
}

// sealDue writes a periodic seal when the interval has passed, idle or
// not, so that a live log's last seal is never older than the interval.
func (s *fileSink) sealDue() error {
	if s.f == nil || s.every <= 0 || s.now().Sub(s.lastSeal) < s.every {
		return nil
	}
	return s.seal("")
}

// mark remembers the chain before a batch is framed, for rollback.
func (s *fileSink) mark() { s.mHead, s.mHasHead, s.mSeq = s.head, s.hasHead, s.seq }

// rollback forgets the lines framed since mark: their batch was dropped.
func (s *fileSink) rollback() { s.head, s.hasHead, s.seq = s.mHead, s.mHasHead, s.mSeq }

// frame appends the line written for one record: line is the encoded
// record with seqPlaceholder at at and a final newline; the sink stamps
// seq and prev, encrypts it if configured and chains it.
func (s *fileSink) frame(dst, line []byte, at int, seq uint64) []byte {
	p := append(s.plain[:0], line[:at]...)
	p = append(p, `"seq":`...)
	p = strconv.AppendUint(p, seq, 10)
	if s.hasHead {
		p = append(p, `,"prev":"`...)
		p = hex.AppendEncode(p, s.head[:])
		p = append(p, '"')
	}
	p = append(p, line[at+len(seqPlaceholder)-1:len(line)-1]...)
	s.plain = p
	start := len(dst)
	if s.enc != nil {
		dst = s.enc.appendLine(dst, p)
	} else {
		dst = append(dst, p...)
	}
	s.head, s.hasHead, s.seq = lineHash(dst[start:]), true, seq
	return append(dst, '\n')
}

// lastRotatedHash is the hash of the last record of the newest rotated
// file that holds one.
func lastRotatedHash(path string) ([32]byte, bool, error) {
	files, err := RotatedFiles(path)
	if err != nil {
		return [32]byte{}, false, err
	}
	for i := len(files) - 1; i >= 0; i-- {
		f, err := os.Open(files[i])
		if err != nil {
			return [32]byte{}, false, err
		}
		fi, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return [32]byte{}, false, err
		}
		h, ok, err := lastRecordHash(f, fi.Size())
		_ = f.Close() // read-only
		if err != nil || ok {
			return h, ok, err
		}
	}
	return [32]byte{}, false, nil
}

// lastRecordHash reads f backwards for its last record line (not a meta
// line) and returns its chain hash.
func lastRecordHash(f io.ReaderAt, size int64) ([32]byte, bool, error) {
	const chunk = 64 << 10
	start := size
	var rest []byte
	for {
		j := bytes.LastIndexByte(rest, '\n')
		if j < 0 && start > 0 {
			n := min(int64(chunk), start)
			buf := make([]byte, n, int(n)+len(rest))
			if _, err := f.ReadAt(buf, start-n); err != nil {
				return [32]byte{}, false, err
			}
			start -= n
			rest = append(buf, rest...)
			continue
		}
		line := rest[j+1:]
		if j < 0 {
			rest = nil
		} else {
			rest = rest[:j]
		}
		if len(bytes.TrimSpace(line)) > 0 && !bytes.HasPrefix(line, []byte(metaPrefix)) {
			return lineHash(line), true, nil
		}
		if j < 0 {
			return [32]byte{}, false, nil
		}
	}
}

func (s *fileSink) warning() error {
	w := s.warn
	s.warn = nil
	return w
}

// repairTail removes an incomplete last line, left by a crash in the
// middle of a write, so that the next record starts on a line of its own
// and every line of the file stays a whole record.
func (s *fileSink) repairTail() (int64, error) {
	if s.size == 0 {
		return 0, nil
	}
	var last [1]byte
	if _, err := s.f.ReadAt(last[:], s.size-1); err != nil {
		return 0, err
	}
	if last[0] == '\n' {
		return 0, nil
	}
	buf := make([]byte, 64<<10)
	end := s.size
	keep := int64(0)
	for end > 0 {
		start := max(end-int64(len(buf)), 0)
		chunk := buf[:end-start]
		if _, err := s.f.ReadAt(chunk, start); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 {
			keep = start + int64(i) + 1
			break
		}
		end = start
	}
	if err := s.f.Truncate(keep); err != nil {
		return 0, err
	}
	torn := s.size - keep
	s.size = keep
	return torn, nil
}

func (s *fileSink) write(p []byte) error {
	if s.f == nil { // closed after a failure: open again
		if _, err := s.open(); err != nil {
			return fmt.Errorf("reopen: %w", err)
		}
	}
	if s.regular && s.maxBytes > 0 && s.recs > 0 && s.size+int64(len(p))+metaReserve > s.maxBytes {
		if err := s.rotate(); err != nil {
			return fmt.Errorf("rotate: %w", err)
		}
	}
	if err := s.writeRaw(p, bytes.Count(p, []byte("\n"))); err != nil {
		return err
	}
	// Everything framed was in p (held lines and the batch).
	s.wHead, s.wHasHead, s.wSeq = s.head, s.hasHead, s.seq
	return nil
}

func (s *fileSink) flush(force bool) error {
	if !s.dirty || s.f == nil {
		return nil
	}
	switch {
	case s.fsync == FsyncNever && !force:
		return nil
	case s.fsync == FsyncInterval && !force && s.now().Sub(s.lastSync) < s.interval:
		return nil
	}
	s.dirty = false
	s.lastSync = s.now()
	if err := s.f.Sync(); err != nil && s.regular {
		return err
	}
	return nil
}

// close writes the final seal and closes the file.
func (s *fileSink) close() error {
	if s.f == nil {
		return nil
	}
	serr := s.seal(sealEndClose)
	return errors.Join(serr, s.closeFile())
}

func (s *fileSink) closeFile() error {
	if s.f == nil {
		return nil
	}
	err := s.flush(true)
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	s.f = nil
	return err
}

// rotatedSuffix is the time format of rotated file names: they sort by
// name in the order they were written.
const rotatedSuffix = "20060102T150405.000000000Z"

func (s *fileSink) rotate() error {
	if err := s.seal(sealEndRotate); err != nil {
		return err
	}
	if err := s.closeFile(); err != nil {
		return err
	}
	base := s.path + "." + s.now().UTC().Format(rotatedSuffix)
	name := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(name); errors.Is(err, os.ErrNotExist) {
			break
		}
		name = fmt.Sprintf("%s-%d", base, i)
	}
	if err := os.Rename(s.path, name); err != nil {
		return err
	}
	s.opening = "rotate"
	if _, err := s.open(); err != nil {
		return err
	}
	return nil
}

// RotatedFiles lists the rotated files of the file sink at path, oldest
// first: the order in which to verify them, before path itself.
func RotatedFiles(path string) ([]string, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		suffix, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok || e.IsDir() || len(suffix) < len(rotatedSuffix) {
			continue
		}
		if _, err := time.Parse(rotatedSuffix, suffix[:len(rotatedSuffix)]); err != nil {
			continue
		}
		out = append(out, filepath.Join(dir, e.Name()))
	}
	sort.Strings(out)
	return out, nil
}

// prune removes rotated files beyond maxFiles (oldest first) and those
// whose last write is older than maxAge.
func (s *fileSink) prune() error {
	if s.maxFiles == 0 && s.maxAge == 0 {
		return nil
	}
	files, err := RotatedFiles(s.path)
	if err != nil {
		return err
	}
	var errs []error
	cutoff := s.now().Add(-s.maxAge)
	for i, name := range files {
		old := s.maxFiles > 0 && i < len(files)-s.maxFiles
		if !old && s.maxAge > 0 {
			if fi, err := os.Stat(name); err == nil && fi.ModTime().Before(cutoff) {
				old = true
			}
		}
		if old {
			if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
