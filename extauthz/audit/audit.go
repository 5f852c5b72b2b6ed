package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Errors Audit returns: the record was not kept, so the caller denies.
var (
	ErrQueueFull  = errors.New("audit: queue full")
	ErrUnhealthy  = errors.New("audit: a sink is failing")
	ErrClosed     = errors.New("audit: logger stopped")
	ErrNotRunning = errors.New("audit: not running")
)

// KeySource returns the HMAC key for redaction, e.g. read from a Vault KV
// secret. Run calls it once, before writing anything.
type KeySource func(ctx context.Context) ([]byte, error)

// MinKeySize is the shortest HMAC key accepted.
const MinKeySize = 16

// Log field names.
const (
	logSink   = "sink"
	logError  = "error"
	logReason = "reason"
	logBytes  = "bytes"
	logCount  = "count"
)

// Option sets an optional dependency of New.
type Option func(*options)

type options struct {
	log       *slog.Logger
	reg       prometheus.Registerer
	key       []byte
	keySource KeySource
	now       func() time.Time
	stdout    io.Writer
	readFile  func(name string) ([]byte, error)
	retry     time.Duration
	maxBytes  int64 // overrides maxSizeMB of file sinks (tests)
	tap       Tap   // sees each record after redaction (tap.go)
	sealKey   []byte
	sealSrc   KeySource
	encKey    []byte
	encSrc    KeySource
}

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithRegisterer registers the metrics on r. Default: not registered.
func WithRegisterer(r prometheus.Registerer) Option { return func(o *options) { o.reg = r } }

// WithHMACKey sets the redaction key, taking precedence over the
// configuration's keyFile and keySecret.
func WithHMACKey(key []byte) Option {
	return func(o *options) { o.key = bytes.Clone(key) }
}

// WithKeySource reads the redaction key when Run starts (required when the
// configuration names a keySecret).
func WithKeySource(src KeySource) Option { return func(o *options) { o.keySource = src } }

// WithSealKey sets the seal key, taking precedence over seal.keyFile and
// seal.keySecret.
func WithSealKey(key []byte) Option { return func(o *options) { o.sealKey = bytes.Clone(key) } }

// WithSealKeySource reads the seal key when Run starts (required when
// seal.keySecret is set).
func WithSealKeySource(src KeySource) Option { return func(o *options) { o.sealSrc = src } }

// WithEncryptionKey sets the encryption key (32 bytes, raw, hex or
// base64), taking precedence over encryption.keyFile and keySecret.
func WithEncryptionKey(key []byte) Option { return func(o *options) { o.encKey = bytes.Clone(key) } }

// WithEncryptionKeySource reads the encryption key when Run starts
// (required when encryption.keySecret is set).
func WithEncryptionKeySource(src KeySource) Option { return func(o *options) { o.encSrc = src } }

// WithClock sets the clock that stamps records and ages rotated files.
// Default time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithReadFile sets how New reads redaction.keyFile, e.g. relative to the
// configuration's folder. Default os.ReadFile.
func WithReadFile(f func(name string) ([]byte, error)) Option {
	return func(o *options) { o.readFile = f }
}

// WithStdout sets where the stdout sink writes. Default os.Stdout.
func WithStdout(w io.Writer) Option { return func(o *options) { o.stdout = w } }

// Logger queues records and writes them to every sink. Audit and Event
// are safe for concurrent use; Run drains the queue.
type Logger struct {
	cfg        Config
	failClosed bool
	process    string
	queue      chan *Record
	log        *slog.Logger
	m          *metrics
	now        func() time.Time
	retry      time.Duration
	key        []byte
	keySource  KeySource
	sinks      []*sinkState
	sealKey    []byte
	sealSrc    KeySource
	encKey     []byte
	encSrc     KeySource
	tap        Tap

	mu        sync.RWMutex // closed is written under mu, read under RLock by Audit
	closed    bool
	started   atomic.Bool
	ready     atomic.Bool
	unhealthy atomic.Bool
	lossLog   rate.Sometimes

	// Used by the Run goroutine only.
	shred     *shredder // nil without shred.keyStore
	shredLog  rate.Sometimes
	lastTombs time.Time
	red       *redactor
	line      []byte
}

// sinkState is a sink, its sequence and what it has yet to write.
type sinkState struct {
	s        sink
	file     *fileSink // s, when it is a file sink: chained and sealed
	ocsf     bool      // lines are OCSF events (ocsf.go), not chained
	seq      uint64
	buf      []byte // lines of the batch being written
	bufN     int
	pending  []byte // lines that failed to write, written first next time
	pendingN int
	written  prometheus.Counter
	errors   prometheus.Counter
	errLog   rate.Sometimes
}

// New builds a Logger from a configuration (defaults are applied to a
// copy and it is validated). Nothing is opened until Run.
func New(cfg Config, opts ...Option) (*Logger, error) {
	o := options{log: slog.New(slog.DiscardHandler), now: time.Now, stdout: os.Stdout, readFile: os.ReadFile, retry: 500 * time.Millisecond}
	for _, opt := range opts {
		opt(&o)
	}
	cfg.Sinks = append([]SinkConfig(nil), cfg.Sinks...)
	cfg.SetDefaults()
	if err := cfg.Validate("audit"); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &Logger{
		cfg:        cfg,
		failClosed: *cfg.FailClosed,
		queue:      make(chan *Record, cfg.QueueSize),
		log:        o.log,
		now:        o.now,
		retry:      o.retry,
		key:        o.key,
		keySource:  o.keySource,
		sealKey:    o.sealKey,
		sealSrc:    o.sealSrc,
		encKey:     o.encKey,
		encSrc:     o.encSrc,
		tap:        o.tap,
		lossLog:    rate.Sometimes{Interval: 10 * time.Second},
	}
	var nonce [8]byte
	rand.Read(nonce[:])
	l.process = hex.EncodeToString(nonce[:])

	if l.key == nil && l.keySource == nil {
		switch r := cfg.Redaction; {
		case r.KeySecret != "":
			return nil, errors.New("audit: redaction.keySecret is set but no key source was given")
		case r.KeyFile != "":
			k, err := o.readFile(r.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("audit: read redaction.keyFile: %w", err)
			}
			l.key = k
		}
	}
	if l.key != nil {
		k, err := checkKey(l.key)
		if err != nil {
			return nil, err
		}
		l.key = k
	}
	var kerr error
	if l.sealKey, kerr = configuredKey("seal", l.sealKey, l.sealSrc, cfg.Seal.KeyFile, cfg.Seal.KeySecret, o.readFile); kerr != nil {
		return nil, kerr
	}
	if l.encKey, kerr = configuredKey("encryption", l.encKey, l.encSrc, cfg.Encryption.KeyFile, cfg.Encryption.KeySecret, o.readFile); kerr != nil {
		return nil, kerr
	}

	m, err := newMetrics(o.reg, func() float64 { return float64(len(l.queue)) }, func() float64 {
		if l.unhealthy.Load() {
			return 0
		}
		return 1
	})
	if err != nil {
		return nil, err
	}
	l.m = m
	for _, sc := range cfg.Sinks {
		var s sink
		var fs *fileSink
		ocsf := sc.Format == FormatOCSF
		switch sc.Type {
		case "file":
			fs = newFileSink(sc, l.now)
			if o.maxBytes > 0 {
				fs.maxBytes = o.maxBytes
			}
			fs.process, fs.every = l.process, time.Duration(cfg.Seal.Interval)
			s = fs
			if ocsf { // an export file: rotated, not chained, sealed or encrypted
				fs.export = true
				fs = nil
			}
		case "otlp":
			otlp, err := newOTLPSink(sc, l.process, o.readFile)
			if err != nil {
				return nil, fmt.Errorf("audit: %w", err)
			}
			s = otlp
		default:
			s = &writerSink{label: "stdout", w: o.stdout}
		}
		l.sinks = append(l.sinks, &sinkState{
			s:       s,
			file:    fs,
			ocsf:    ocsf,
			written: m.written.WithLabelValues(s.name()),
			errors:  m.sinkErrors.WithLabelValues(s.name()),
			errLog:  rate.Sometimes{Interval: 10 * time.Second},
		})
	}
	return l, nil
}

func checkKey(k []byte) ([]byte, error) {
	k = bytes.TrimSpace(k)
	if len(k) < MinKeySize {
		return nil, fmt.Errorf("audit: redaction key has %d bytes, want at least %d", len(k), MinKeySize)
	}
	return k, nil
}

// Process is the nonce that tells this run's records apart in a file.
func (l *Logger) Process() string { return l.process }

// IncludesBody reports whether records keep their Body (includeBody), so
// that callers can skip building it otherwise. A nil Logger keeps
// nothing.
func (l *Logger) IncludesBody() bool { return l != nil && l.cfg.IncludeBody }

// Audit queues rec without blocking. The logger then owns rec: the caller
// must not use it again. A nil error means the record is queued; an error
// means it was not kept and the caller must deny (with failClosed, the
// default). Audit returns an error when the queue is full, while a sink is
// failing (until a write succeeds again) and after Run has ended. Without
// failClosed, a full queue or a failing sink only counts and logs the loss.
func (l *Logger) Audit(rec *Record) error {
	if rec == nil {
		return errors.New("audit: nil record")
	}
	if rec.Time.IsZero() {
		rec.Time = l.now()
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.m.lostBy[LostClosed].Inc()
		return ErrClosed
	}
	if l.failClosed && l.unhealthy.Load() {
		l.m.lostBy[LostUnhealthy].Inc()
		return ErrUnhealthy
	}
	select {
	case l.queue <- rec:
		return nil
	default:
	}
	l.m.lostBy[LostQueueFull].Inc()
	l.lossLog.Do(func() {
		l.log.Warn("audit queue full: record lost", logReason, LostQueueFull, "failClosed", l.failClosed)
	})
	if l.failClosed {
		return ErrQueueFull
	}
	return nil
}

// Event records a security event of the given kind (one of the Kind
// constants) with a message and details; credentials in them are redacted.
// It returns what Audit returns.
func (l *Logger) Event(kind, message string, fields map[string]string) error {
	var d map[string]string
	if len(fields) > 0 {
		d = make(map[string]string, len(fields))
		for k, v := range fields {
			d[k] = v
		}
	}
	return l.Audit(&Record{Kind: kind, Message: message, Detail: d})
}

// SecurityEvent records a security event whose details are slog
// attributes (groups flattened as "group.key"), so that a *Logger is an
// event sink for packages that report events that way (secrets.EventSink).
// A refused record is counted in meshward_audit_records_lost_total.
func (l *Logger) SecurityEvent(kind, message string, attrs ...slog.Attr) {
	var d map[string]string
	if len(attrs) > 0 {
		d = make(map[string]string, len(attrs))
		flattenAttrs(d, "", attrs)
	}
	// The record is non-nil, so every error is a loss Audit has counted;
	// the reporter of a security event has nothing else to do with it.
	_ = l.Audit(&Record{Kind: kind, Message: message, Detail: d})
}

func flattenAttrs(d map[string]string, prefix string, attrs []slog.Attr) {
	for _, a := range attrs {
		v := a.Value.Resolve()
		if v.Kind() == slog.KindGroup {
			p := prefix
			if a.Key != "" {
				p = prefix + a.Key + "."
			}
			flattenAttrs(d, p, v.Group())
			continue
		}
		d[prefix+a.Key] = v.String()
	}
}

// Ready reports whether records are being written: nil once Run has opened
// every sink, an error before that, after Run ends, and (with failClosed)
// while a sink is failing.
func (l *Logger) Ready() error {
	if !l.ready.Load() {
		return ErrNotRunning
	}
	if l.failClosed && l.unhealthy.Load() {
		return ErrUnhealthy
	}
	return nil
}

// Run loads the redaction key, opens the sinks and writes queued records
// in batches until ctx is done; then it writes what is still queued,
// closes the sinks and returns nil. Writes do not depend on any request's
// context. It returns an error only if it cannot start. Run may be called
// once.
func (l *Logger) Run(ctx context.Context) error {
	if !l.started.CompareAndSwap(false, true) {
		return errors.New("audit: Run called twice")
	}
	if err := l.start(ctx); err != nil {
		l.stop()
		return err
	}
	l.ready.Store(true)
	tick := l.retry
	for _, st := range l.sinks {
		if fs, ok := st.s.(*fileSink); ok && fs.fsync == FsyncInterval && fs.interval < tick {
			tick = fs.interval
		}
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	batch := make([]*Record, 0, l.cfg.BatchSize)
	for {
		select {
		case rec := <-l.queue:
			batch = l.fill(append(batch[:0], rec))
			l.writeBatch(batch)
		case <-t.C:
			l.tick(false)
		case <-ctx.Done():
			l.ready.Store(false)
			l.stop()
			return nil
		}
	}
}

func (l *Logger) start(ctx context.Context) error {
	key := l.key
	if key == nil && l.keySource != nil {
		k, err := l.keySource(ctx)
		if err != nil {
			return fmt.Errorf("audit: load redaction key: %w", err)
		}
		if key, err = checkKey(k); err != nil {
			return err
		}
	}
	if key == nil {
		key = make([]byte, 32)
		rand.Read(key)
		l.log.Warn("audit: no redaction key configured; using a random key, so redacted values cannot be correlated across restarts")
	}
	if err := l.startChain(ctx); err != nil {
		return err
	}
	for i, st := range l.sinks {
		torn, err := st.s.open()
		if err != nil {
			st.errors.Inc()
			for _, o := range l.sinks[:i] {
				if o.file != nil {
					_ = o.file.closeFile() // nothing written, not even its header
				} else {
					_ = o.s.close() // nothing written yet; the open error is the one to report
				}
			}
			return fmt.Errorf("audit: open sink %s: %w", st.s.name(), err)
		}
		if torn > 0 {
			l.m.lose(LostTornTail, 1)
			l.log.Warn("audit: removed an incomplete last line left by a crash", logSink, st.s.name(), logBytes, torn)
		}
		if w := st.s.warning(); w != nil {
			st.errors.Inc()
			l.log.Warn("audit: sink warning", logSink, st.s.name(), logError, w)
		}
	}
	l.red = newRedactor(&l.cfg, key) // set last: stop writes only if every sink opened
	return nil
}

// stop refuses further records, writes what is queued, gives failing sinks
// a last try and closes them.
func (l *Logger) stop() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	if l.red == nil { // did not start: what was queued is lost
		l.m.lose(LostClosed, len(l.queue))
		return
	}
	batch := make([]*Record, 0, l.cfg.BatchSize)
	for {
		batch = l.fill(batch[:0])
		if len(batch) == 0 {
			break
		}
		l.writeBatch(batch)
	}
	l.tick(true)
	for _, st := range l.sinks {
		if st.pendingN > 0 {
			l.m.lose(LostShutdown, st.pendingN)
			l.log.Error("audit: records not written at shutdown", logSink, st.s.name(), logCount, st.pendingN)
		}
		if err := st.s.close(); err != nil {
			st.errors.Inc()
			l.log.Error("audit: close sink", logSink, st.s.name(), logError, err)
		}
	}
}

// fill appends queued records to batch without waiting, up to BatchSize.
func (l *Logger) fill(batch []*Record) []*Record {
	for len(batch) < l.cfg.BatchSize {
		select {
		case rec := <-l.queue:
			batch = append(batch, rec)
		default:
			return batch
		}
	}
	return batch
}

const seqPlaceholder = `"seq":0,`

// writeBatch encodes each record once, stamps each sink's sequence number
// into its copy of the line and writes each sink's lines with one write.
func (l *Logger) writeBatch(batch []*Record) {
	for i, rec := range batch {
		batch[i] = nil
		line, ok := l.encode(rec)
		if !ok {
			continue
		}
		if l.tap != nil {
			l.tap(rec) // redacted by encode
		}
		at := bytes.Index(line, []byte(seqPlaceholder))
		for _, st := range l.sinks {
			if st.ocsf {
				b, err := appendOCSF(st.buf, rec, st.seq+1)
				if err != nil {
					l.m.lose(LostEncode, 1)
					l.log.Error("audit: record not encodable as OCSF", logSink, st.s.name(), logError, err)
					continue
				}
				st.seq++
				st.buf, st.bufN = b, st.bufN+1
				continue
			}
			st.seq++
			if st.file != nil {
				if st.bufN == 0 {
					st.file.mark()
				}
				st.buf = st.file.frame(st.buf, line, at, st.seq)
				st.bufN++
				continue
			}
			st.buf = append(st.buf, line[:at]...)
			st.buf = append(st.buf, `"seq":`...)
			st.buf = strconv.AppendUint(st.buf, st.seq, 10)
			st.buf = append(st.buf, line[at+len(seqPlaceholder)-1:]...)
			st.bufN++
		}
	}
	for _, st := range l.sinks {
		l.flushSink(st)
	}
	l.updateHealth()
}

// encode redacts rec and returns its JSON line (with seq 0), valid until
// the next call.
func (l *Logger) encode(rec *Record) ([]byte, bool) {
	rec.Seq = 0
	rec.Process = l.process
	rec.Time = rec.Time.UTC()
	l.red.apply(rec)
	if l.shred != nil {
		if err := l.shred.apply(rec, l.now()); err != nil {
			// No subject key: never write the personal fields in clear.
			l.shred.redactPersonal(rec, l.red)
			l.shredLog.Do(func() {
				l.log.Error("audit: no data subject key; personal fields redacted instead of encrypted", logError, err)
			})
		}
	}
	line, err := appendRecord(l.line[:0], rec)
	if err != nil {
		// Claims or a body holding something JSON cannot encode (NaN, a
		// channel), or a time out of range: keep the record without them.
		rec.Claims, rec.Body = nil, nil
		if y := rec.Time.Year(); y < 0 || y > 9999 {
			rec.Time = l.now().UTC()
		}
		rec.Detail = map[string]string{"audit_error": "claims, body or time not encodable as JSON"}
		if line, err = appendRecord(l.line[:0], rec); err != nil {
			l.m.lose(LostEncode, len(l.sinks))
			l.log.Error("audit: record not encodable", logError, err)
			return nil, false
		}
	}
	l.line = append(line, '\n')
	return l.line, true
}

// flushSink writes the sink's pending lines and batch. On failure the
// lines are kept for the next try (so the sequence keeps no gap) unless
// that would hold more than QueueSize records: then the batch is dropped,
// counted as lost, and its sequence numbers are missing from the sink,
// which `audit verify` reports as a gap.
func (l *Logger) flushSink(st *sinkState) {
	if st.bufN == 0 && st.pendingN == 0 {
		return
	}
	p := st.buf
	if st.pendingN > 0 {
		st.pending = append(st.pending, st.buf...)
		p = st.pending
	}
	err := st.s.write(p)
	if err == nil {
		st.written.Add(float64(st.pendingN + st.bufN))
		st.pending, st.pendingN = st.pending[:0], 0
		st.buf, st.bufN = st.buf[:0], 0
		if err := st.s.flush(false); err != nil {
			l.sinkError(st, "sync", err)
		}
		return
	}
	l.sinkError(st, "write", err)
	if st.pendingN > 0 {
		st.pending = st.pending[:len(st.pending)-len(st.buf)]
	}
	if st.pendingN+st.bufN > l.cfg.QueueSize {
		l.m.lose(LostSinkFailed, st.bufN)
		if st.file != nil {
			st.file.rollback() // the next record chains to the last one held
		}
	} else {
		st.pending = append(st.pending, st.buf...)
		st.pendingN += st.bufN
	}
	st.buf, st.bufN = st.buf[:0], 0
}

func (l *Logger) sinkError(st *sinkState, op string, err error) {
	st.errors.Inc()
	st.errLog.Do(func() {
		l.log.Error("audit: sink "+op+" failed", logSink, st.s.name(), logError, err)
	})
}

// tick retries failing sinks and syncs by interval; force syncs all.
func (l *Logger) tick(force bool) {
	l.auditForgets()
	for _, st := range l.sinks {
		if st.pendingN > 0 {
			l.flushSink(st)
		} else {
			if st.file != nil {
				if err := st.file.sealDue(); err != nil {
					l.sinkError(st, "seal", err)
				}
			}
			if err := st.s.flush(force); err != nil {
				l.sinkError(st, "sync", err)
			}
		}
		if w := st.s.warning(); w != nil {
			l.sinkError(st, "maintenance", w)
		}
	}
	l.updateHealth()
}

func (l *Logger) updateHealth() {
	bad := false
	var names []string
	for _, st := range l.sinks {
		if st.pendingN > 0 {
			bad = true
			names = append(names, st.s.name())
		}
	}
	if was := l.unhealthy.Swap(bad); was != bad {
		if bad {
			l.log.Error("audit: sink failing; records are held for retry", logSink, strings.Join(names, ","), "failClosed", l.failClosed)
		} else {
			l.log.Info("audit: sinks writing again")
		}
	}
}
