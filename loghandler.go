package main

// loghandler.go is the server's log handler: slog's text and JSON lines,
// byte for byte, formatted by us for the attribute kinds a login logs.

import (
	"context"
	"io"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// logHandler writes the same bytes as slog's TextHandler or JSONHandler
// with nil options, but formats the lines the server makes on its hot path
// (string, integer, bool, duration, float and time attributes) itself:
// slog's generic path costs about as much as the rest of a login. Any
// record it is not sure to reproduce byte for byte (Any values such as
// errors, groups, LogValuers, times outside years 0-9999, JSON floats that
// are not finite) goes to the real slog handler instead, so the output
// never depends on which path took the line.
//
// Both paths write a line with one Write call under the same mutex: the
// real handler writes through a lockedWriter that holds h.mu, so a fast
// line and a slow one cannot interleave.
type logHandler struct {
	json bool
	mu   *sync.Mutex
	w    io.Writer
	slow slog.Handler
}

func newLogHandler(w io.Writer, json bool) *logHandler {
	h := &logHandler{json: json, mu: new(sync.Mutex), w: w}
	lw := &lockedWriter{mu: h.mu, w: w}
	if json {
		h.slow = slog.NewJSONHandler(lw, nil)
	} else {
		h.slow = slog.NewTextHandler(lw, nil)
	}
	return h
}

// lockedWriter is the real handler's writer. slog's handlers lock their
// own mutex around Write; this one makes them share the fast path's.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (h *logHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelInfo
}

// WithAttrs and WithGroup hand the derived logger to the real handler:
// the server logs nothing through one on a hot path, and slog's
// preformatting of groups and attributes is not worth redoing here.
func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return h.slow.WithAttrs(attrs)
}

// Even an empty group goes to slog: its handlers, unlike its Logger,
// prefix later keys with "." then.
func (h *logHandler) WithGroup(name string) slog.Handler {
	return h.slow.WithGroup(name)
}

// maxPooledLogBuf keeps an occasional huge line (a stack trace) from
// pinning its buffer in the pool.
const maxPooledLogBuf = 16 << 10

var logBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 512)
	return &b
}}

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	bp := logBufs.Get().(*[]byte)
	b, ok := h.appendRecord((*bp)[:0], r)
	if !ok {
		logBufs.Put(bp)
		return h.slow.Handle(ctx, r)
	}
	err := h.write(b)
	if cap(b) <= maxPooledLogBuf {
		*bp = b
		logBufs.Put(bp)
	}
	return err
}

func (h *logHandler) write(b []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.w.Write(b)
	return err
}

// appendRecord appends r's line, newline included. It reports false,
// with b in an unspecified state, when some part of r is left to slog.
func (h *logHandler) appendRecord(b []byte, r slog.Record) ([]byte, bool) {
	b, ok := h.appendHead(b, r.Time, r.Level, r.Message)
	if !ok {
		return b, false
	}
	r.Attrs(func(a slog.Attr) bool {
		b, ok = h.appendAttr(b, a)
		return ok
	})
	if !ok {
		return b, false
	}
	return h.appendTail(b), true
}

// line writes a line of attrs at level, stamped now, as Handle would write the
// record of them, without making the record: a slog.Record keeps five
// attributes in itself and allocates for more ("connection closed" has
// seven). It falls back to Handle as Handle falls back to slog.
func (h *logHandler) line(now time.Time, level slog.Level, msg string, attrs []slog.Attr) error {
	bp := logBufs.Get().(*[]byte)
	b, ok := h.appendHead((*bp)[:0], now, level, msg)
	for i := 0; ok && i < len(attrs); i++ {
		b, ok = h.appendAttr(b, attrs[i])
	}
	if !ok {
		logBufs.Put(bp)
		r := slog.NewRecord(now, level, msg, 0)
		r.AddAttrs(attrs...)
		return h.slow.Handle(context.Background(), r)
	}
	err := h.write(h.appendTail(b))
	if cap(b) <= maxPooledLogBuf {
		*bp = b
		logBufs.Put(bp)
	}
	return err
}

// appendHead writes the time, level and message that begin every line.
func (h *logHandler) appendHead(b []byte, t time.Time, level slog.Level, msg string) ([]byte, bool) {
	ok := true
	if h.json {
		b = append(b, '{')
		if !t.IsZero() {
			if b, ok = appendJSONTime(append(b, `"time":`...), t); !ok {
				return b, false
			}
			b = append(b, ',')
		}
		b = append(b, `"level":"`...)
		b = append(appendLevelName(b, level), `","msg":`...)
		return appendJSONString(b, msg), true
	}
	if !t.IsZero() {
		if b, ok = appendTextTime(append(b, "time="...), t); !ok {
			return b, false
		}
		b = append(b, ' ')
	}
	b = appendLevelName(append(b, "level="...), level)
	return appendTextString(append(b, " msg="...), msg), true
}

func (h *logHandler) appendAttr(b []byte, a slog.Attr) ([]byte, bool) {
	if h.json {
		b = append(appendJSONString(append(b, ','), a.Key), ':')
		return appendValue(b, a.Value, true)
	}
	b = append(appendTextString(append(b, ' '), a.Key), '=')
	return appendValue(b, a.Value, false)
}

func (h *logHandler) appendTail(b []byte) []byte {
	if h.json {
		b = append(b, '}')
	}
	return append(b, '\n')
}

// appendLevelName writes what slog.Level.String returns (INFO, WARN+1,
// DEBUG-2) without building a string for the in-between levels. The
// subtraction wraps for extreme levels exactly as slog's does.
func appendLevelName(b []byte, l slog.Level) []byte {
	name, base := "ERROR", slog.LevelError
	switch {
	case l < slog.LevelInfo:
		name, base = "DEBUG", slog.LevelDebug
	case l < slog.LevelWarn:
		name, base = "INFO", slog.LevelInfo
	case l < slog.LevelError:
		name, base = "WARN", slog.LevelWarn
	}
	b = append(b, name...)
	if off := l - base; off != 0 {
		if off > 0 {
			b = append(b, '+')
		}
		b = strconv.AppendInt(b, int64(off), 10)
	}
	return b
}

// appendValue writes v as the format does, or reports false for a kind
// left to slog. Numbers and bools read the same in both; slog writes
// every kind but strings (and Any) unquoted in text.
func appendValue(b []byte, v slog.Value, json bool) ([]byte, bool) {
	switch v.Kind() {
	case slog.KindString:
		if json {
			return appendJSONString(b, v.String()), true
		}
		return appendTextString(b, v.String()), true
	case slog.KindInt64:
		return strconv.AppendInt(b, v.Int64(), 10), true
	case slog.KindUint64:
		return strconv.AppendUint(b, v.Uint64(), 10), true
	case slog.KindBool:
		return strconv.AppendBool(b, v.Bool()), true
	case slog.KindDuration:
		if json {
			// As encoding/json writes a time.Duration: its nanoseconds.
			return strconv.AppendInt(b, int64(v.Duration()), 10), true
		}
		return appendDuration(b, v.Duration()), true
	case slog.KindFloat64:
		if json {
			return appendJSONFloat(b, v.Float64())
		}
		return strconv.AppendFloat(b, v.Float64(), 'g', -1, 64), true
	case slog.KindTime:
		if json {
			return appendJSONTime(b, v.Time())
		}
		return appendTextTime(b, v.Time())
	}
	return b, false
}

// timeInFastRange excludes the years RFC 3339 has no 4-digit form for:
// slog writes an error before a JSON time then, and drops the wrong digit
// from a text one.
func timeInFastRange(t time.Time) bool {
	y := t.Year()
	return y >= 0 && y <= 9999
}

// appendTextTime writes t as RFC 3339 with exactly three fractional
// digits, truncated, the way slog's text handler does. It lets
// time.RFC3339, which the time package formats on a fast path, lay out
// the rest and slides the zone along to make room for ".mmm".
func appendTextTime(b []byte, t time.Time) ([]byte, bool) {
	if !timeInFastRange(t) {
		return b, false
	}
	const secondsEnd = len("2006-01-02T15:04:05")
	start := len(b)
	b = t.AppendFormat(b, time.RFC3339)
	zone := start + secondsEnd
	b = append(b, "...."...)
	copy(b[zone+4:], b[zone:len(b)-4])
	ms := t.Nanosecond() / 1e6
	b[zone] = '.'
	b[zone+1] = byte('0' + ms/100)
	b[zone+2] = byte('0' + ms/10%10)
	b[zone+3] = byte('0' + ms%10)
	return b, true
}

// appendJSONTime writes t as slog's JSON handler does: quoted RFC 3339
// with nanoseconds, trailing zeros dropped.
func appendJSONTime(b []byte, t time.Time) ([]byte, bool) {
	if !timeInFastRange(t) {
		return b, false
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), true
}

// appendJSONFloat writes f as encoding/json does: plain decimal
// notation, shortest round-trip digits, switching to an exponent below
// 1e-6 and from 1e21 on, with a one-digit negative exponent unpadded.
// NaN and the infinities are errors there; slog reports them its own way.
func appendJSONFloat(b []byte, f float64) ([]byte, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, false
	}
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-07 -> e-7; positive exponents here have two digits already.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, true
}

// appendDuration writes what time.Duration.String returns, without the
// string: under a second in the largest unit of ns, µs and ms that keeps
// a nonzero integer part; from a second on as [Nh][Nm]N[.fff]s, where
// the minutes appear whenever the hours do. Fractions drop trailing zeros.
func appendDuration(b []byte, d time.Duration) []byte {
	u := uint64(d)
	if d < 0 {
		b = append(b, '-')
		u = -u // also right for math.MinInt64
	}
	switch {
	case u == 0:
		return append(b, "0s"...)
	case u < uint64(time.Microsecond):
		return append(strconv.AppendUint(b, u, 10), "ns"...)
	case u < uint64(time.Millisecond):
		return append(appendDecimal(b, u, 3), "µs"...)
	case u < uint64(time.Second):
		return append(appendDecimal(b, u, 6), "ms"...)
	}
	sec := u / uint64(time.Second)
	if h := sec / 3600; h > 0 {
		b = append(strconv.AppendUint(b, h, 10), 'h')
	}
	if m := sec / 60; m > 0 {
		b = append(strconv.AppendUint(b, m%60, 10), 'm')
	}
	b = appendDecimal(b, u%uint64(time.Minute), 9)
	return append(b, 's')
}

// appendDecimal writes u / 10^digits with the fraction's trailing zeros,
// and a fraction of zero with its point, left out.
func appendDecimal(b []byte, u uint64, digits int) []byte {
	var frac [9]byte
	n := 0
	for i := digits - 1; i >= 0; i-- {
		d := byte(u % 10)
		u /= 10
		if n == 0 && d == 0 {
			continue
		}
		if n == 0 {
			n = i + 1
		}
		frac[i] = '0' + d
	}
	b = strconv.AppendUint(b, u, 10)
	if n > 0 {
		b = append(append(b, '.'), frac[:n]...)
	}
	return b
}

// textBare marks the ASCII bytes slog's text handler leaves unquoted:
// all but the control characters, space, '"' and '='. Backslash and DEL
// are bare there. Bytes from 0x80 are false: their rune decides. The
// table covers them so that a scan of plain ASCII needs one test a byte.
var textBare = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != ' ' && c != '"' && c != '='
	}
	return t
}()

// appendTextString writes s bare, or Go-quoted when slog would quote it:
// when it is empty or holds a byte textBare excludes, an invalid byte,
// U+FFFD itself, a Unicode space or a rune that is not printable.
func appendTextString(b []byte, s string) []byte {
	if textNeedsQuotes(s) {
		return appendQuoted(b, s)
	}
	return append(b, s...)
}

// appendQuoted is strconv.AppendQuote, which for printable ASCII escapes
// only '"' and '\\'; that case, the common one ("connection closed", an
// end="write failed"), skips its rune-by-rune escaping.
func appendQuoted(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return strconv.AppendQuote(b, s)
		}
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

func textNeedsQuotes(s string) bool {
	if s == "" {
		return true
	}
	i := 0
	for i < len(s) && textBare[s[i]] {
		i++
	}
	for i < len(s) {
		if c := s[i]; c < utf8.RuneSelf {
			if !textBare[c] {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// jsonBare marks the ASCII bytes that go into a JSON string as they are:
// all but the control characters, '"' and '\\'. slog does not escape
// HTML characters, and leaves DEL alone. As in textBare, bytes from 0x80
// are false.
var jsonBare = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const lowerHex = "0123456789abcdef"

// appendJSONString writes s quoted as slog's JSON handler does: \" \\ \n
// \r \t, other control bytes as \u00xx, each invalid UTF-8 byte as \ufffd,
// U+2028 and U+2029 escaped (JavaScript reads them as line ends), and any
// other rune as it is.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	i := 0
	for i < len(s) && jsonBare[s[i]] {
		i++
	}
	done := 0
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonBare[c] {
				i++
				continue
			}
			b = append(b, s[done:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', lowerHex[c>>4], lowerHex[c&0xf])
			}
			i++
			done = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(append(b, s[done:i]...), `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(append(b, s[done:i]...), `\u202`...)
			b = append(b, lowerHex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		done = i
	}
	b = append(b, s[done:]...)
	return append(b, '"')
}
