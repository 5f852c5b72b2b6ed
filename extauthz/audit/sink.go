package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
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
	dirty    bool
	lastSync time.Time
	warn     error
}

func newFileSink(c SinkConfig, now func() time.Time) *fileSink {
	s := &fileSink{
		path:     c.Path,
		maxBytes: int64(c.MaxSizeMB) << 20,
		maxAge:   time.Duration(c.MaxAge),
		fsync:    c.Fsync,
		interval: time.Duration(c.FsyncInterval),
		now:      now,
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
	s.f, s.regular, s.size = f, fi.Mode().IsRegular(), fi.Size()
	if !s.regular {
		return 0, nil
	}
	if fi.Mode().Perm() != 0o600 {
		if err := f.Chmod(0o600); err != nil {
			_ = s.close() // the Chmod error is the one to report
			return 0, err
		}
	}
	torn, err := s.repairTail()
	if err != nil {
		_ = s.close()
		return 0, fmt.Errorf("repair torn last line: %w", err)
	}
	if err := s.prune(); err != nil {
		s.warn = fmt.Errorf("prune rotated files: %w", err)
	}
	return torn, nil
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
	if s.regular && s.maxBytes > 0 && s.size > 0 && s.size+int64(len(p)) > s.maxBytes {
		if err := s.rotate(); err != nil {
			return fmt.Errorf("rotate: %w", err)
		}
	}
	n, err := s.f.Write(p)
	if err != nil {
		if n > 0 && s.regular {
			// Take back the part that was written, so that no torn line
			// stays in the middle of the file and the retry does not
			// duplicate records.
			if terr := s.f.Truncate(s.size); terr != nil {
				_ = s.close() // reopened by the next write; the errors below are the ones to report
				return errors.Join(err, fmt.Errorf("take back a partial write: %w", terr))
			}
		}
		return err
	}
	s.size += int64(n)
	s.dirty = true
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

func (s *fileSink) close() error {
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
	if err := s.close(); err != nil {
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
