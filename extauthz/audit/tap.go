package audit

// Tap sees each record the logger writes, after redaction and before the
// sinks write it, on the logger's Run goroutine: it must return quickly,
// must not modify the record and must not keep it (copy what it needs),
// e.g. to keep the last denies in memory for a status page. Records the
// logger refused (Audit's errors) never reach it.
type Tap func(*Record)

// WithTap sets a Tap. Default: none.
func WithTap(t Tap) Option { return func(o *options) { o.tap = t } }
