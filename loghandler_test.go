package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// logTricky are strings that take every branch of the text handler's
// quoting and the JSON handler's escaping.
var logTricky = []string{
	"", " ", "a b", "=", "a=b", "key=", `"`, `say "hi"`, `\`, `a\b`, `\"`,
	"\x00", "\x01", "\a", "\b", "\t", "\n", "\v", "\f", "\r", "\x1b[31m", "\x1f", "\x7f",
	"\x80", "\xff", "\xc3", "a\xffb", "\xc3\x28", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82",
	"é", "naïve", "日本語", "Ω≈ç", "\U0001F600", "\ufffd", "a\ufffdb",
	"\u00a0", "\u0085", "\u1680", "\u2000", "\u2009", "\u202f", "\u3000", "\u2028", "\u2029",
	"\u200b", "\u00ad", "\ufeff", "\u0378", "\U000E0001", "\U0010FFFF", "\uE000",
	"<a href='x'>&amp;</a>", "plain", "alice", "192.0.2.1:54321", "[2001:db8::1]:443",
	"SCRAM-SHA-256-PLUS", "ok.", "-", "0", "true", "null", "{}", "a,b", "a:b",
	strings.Repeat("x", 5000), strings.Repeat("é\"", 3000), strings.Repeat("\xff", 700),
	strings.Repeat("ab", 20000) + "=",
}

var logDurations = []time.Duration{
	0, 1, -1, 999, 1000, 1001, 1500, 10010, 999999, 1e6, 1500000, 1000001,
	999999999, time.Second, time.Second + 1, 1500 * time.Millisecond, 59 * time.Second,
	time.Minute, 61 * time.Second, time.Hour - 1, time.Hour, time.Hour + time.Second,
	25*time.Hour + 30*time.Minute + 5*time.Second + 5, 100000 * time.Hour, 1234567 * time.Microsecond,
	-1500 * time.Microsecond, -time.Hour, math.MaxInt64, math.MinInt64, math.MinInt64 + 1,
}

var logFloats = []float64{
	0, math.Copysign(0, -1), 1, -1, 1.5, 0.1, 1.0 / 3, 1e-6, 1e-7, 9.99e-7, -1e-7, 1.25e-10,
	1e20, 1e21, 1e22, -1e21, 123456789.125, 1e100, 1e-100, math.MaxFloat64,
	math.SmallestNonzeroFloat64, 5e-324, 12345678901234567890, 0.000001, 100,
	math.NaN(), math.Inf(1), math.Inf(-1),
}

var logTimes = func() []time.Time {
	east := time.FixedZone("IST", 5*3600+1800)
	west := time.FixedZone("", -8*3600)
	odd := time.FixedZone("LMT", -(4*3600 + 56*60 + 2)) // seconds in the offset
	var ts []time.Time
	for _, loc := range []*time.Location{time.UTC, east, west, odd, time.Local} {
		for _, ns := range []int{0, 1, 999999, 1000000, 123456789, 999999999, 100000000, 120000000} {
			ts = append(ts, time.Date(2026, 12, 3, 19, 16, 12, ns, loc))
		}
		ts = append(ts, time.Date(1, 1, 1, 0, 0, 0, 0, loc), time.Date(9999, 12, 31, 23, 59, 59, 999999999, loc),
			time.Date(1969, 12, 31, 23, 59, 59, 999999999, loc), time.Date(1500, 6, 1, 0, 0, 0, 5e8, loc), time.Date(0, 3, 1, 0, 0, 0, 987654321, loc))
	}
	// Year 0 is the fast path's last; 10000 and -1 are left to slog,
	// and must still come out the same.
	ts = append(ts, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(0, 6, 1, 0, 0, 0, 123456789, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{})
	return ts
}()

var logLevels = []slog.Level{
	slog.LevelInfo, slog.LevelWarn, slog.LevelError, slog.LevelDebug,
	slog.LevelInfo + 1, slog.LevelWarn - 1, slog.LevelError + 4, slog.LevelDebug - 4, slog.LevelDebug + 1,
	math.MinInt, math.MaxInt, math.MinInt + 3, math.MaxInt - 8,
}

// logRecordTime is every test record's time, so that ours and slog's
// lines can be compared byte for byte.
var logRecordTime = time.Date(2026, 12, 3, 19, 16, 12, 345678901, time.UTC)

// lineWrites records what was written and in how many calls.
type lineWrites struct {
	bytes.Buffer
	writes int
}

func (w *lineWrites) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// slogHandler is slog's own handler of the format, the reference.
func slogHandler(w io.Writer, json bool) slog.Handler {
	if json {
		return slog.NewJSONHandler(w, nil)
	}
	return slog.NewTextHandler(w, nil)
}

// logSame formats r with slog's handler and with ours, both formats, and
// fails unless the bytes and the single Write call agree. fast says
// whether our handler must format r itself rather than hand it to slog:
// without that check the comparison could pass by never using the code
// under test.
func logSame(t testing.TB, r slog.Record, fast bool) {
	t.Helper()
	for _, json := range []bool{false, true} {
		var want, got lineWrites
		ref := slogHandler(&want, json)
		h := newLogHandler(&got, json)
		_, ok := h.appendRecord(nil, r)
		if ok != fast {
			t.Fatalf("json=%v: formatted here: %v, want %v, for %v", json, ok, fast, r)
		}
		if err := ref.Handle(context.Background(), r.Clone()); err != nil {
			t.Fatal(err)
		}
		if err := h.Handle(context.Background(), r.Clone()); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("json=%v:\n got %q\nwant %q", json, got.String(), want.String())
		}
		if got.writes != 1 || want.writes != 1 {
			t.Fatalf("json=%v: %d writes, slog %d, want 1", json, got.writes, want.writes)
		}
	}
}

func logRecord(level slog.Level, msg string, attrs ...slog.Attr) slog.Record {
	r := slog.NewRecord(logRecordTime, level, msg, 0)
	r.AddAttrs(attrs...)
	return r
}

func TestLogHandlerSameBytes(t *testing.T) {
	for _, s := range logTricky {
		logSame(t, logRecord(slog.LevelInfo, s, slog.String(s, s)), true)
		logSame(t, logRecord(slog.LevelWarn, "m", slog.String("k", s), slog.String(s, "v"), slog.Int(s, -7)), true)
	}
	for _, l := range logLevels {
		logSame(t, logRecord(l, "level", slog.Bool("b", l > 0)), true)
	}
	for _, n := range []int64{0, 1, -1, 42, -1234567890123, math.MaxInt64, math.MinInt64} {
		logSame(t, logRecord(slog.LevelInfo, "int", slog.Int64("n", n), slog.Int("i", int(n)),
			slog.Uint64("u", uint64(n)), slog.Uint64("max", math.MaxUint64)), true)
	}
	for _, d := range logDurations {
		logSame(t, logRecord(slog.LevelError, "duration", slog.Duration("d", d)), true)
	}
	for _, f := range logFloats {
		finite := !math.IsNaN(f) && !math.IsInf(f, 0)
		// JSON: NaN and the infinities are slog's (it writes an error);
		// text formats them here.
		for _, json := range []bool{false, true} {
			h := newLogHandler(io.Discard, json)
			if _, ok := h.appendRecord(nil, logRecord(slog.LevelInfo, "f", slog.Float64("f", f))); ok != (finite || !json) {
				t.Fatalf("float %v json=%v: formatted here %v", f, json, ok)
			}
		}
		logSameEither(t, logRecord(slog.LevelInfo, "float", slog.Float64("f", f), slog.Float64("g", -f)))
	}
	for _, tm := range logTimes {
		logSameEither(t, logRecord(slog.LevelInfo, "time", slog.Time("t", tm)))
		r := slog.NewRecord(tm, slog.LevelInfo, "record time", 0)
		r.AddAttrs(slog.String("k", "v"))
		logSameEither(t, r)
	}
	// The zero record time is left out of the line.
	logSame(t, slog.NewRecord(time.Time{}, slog.LevelWarn, "no time", 0), true)
	logSame(t, slog.NewRecord(time.Time{}, slog.LevelInfo, "no time", 0), true)
	// Empty keys are written, not elided: only the zero Attr is.
	logSame(t, logRecord(slog.LevelInfo, "", slog.String("", ""), slog.Int("", 0), slog.Bool("", false), slog.Duration("", 0)), true)
	logSame(t, logRecord(slog.LevelInfo, "no attrs"), true)
	// The server's own lines.
	logSame(t, logRecord(slog.LevelInfo, "login", slog.String("remote", "192.0.2.1:54321"),
		slog.String("user", "alice"), slog.String("mech", MechSCRAM)), true)
	logSame(t, logRecord(slog.LevelInfo, "connection closed", slog.String("remote", "[2001:db8::1]:443"),
		slog.String("end", "client quit"), slog.Duration("duration", 1234*time.Millisecond), slog.Int("commands", 5),
		slog.Int("logins", 1), slog.Int("failed_logins", 0), slog.Int("registrations", 0)), true)
	logSame(t, logRecord(slog.LevelInfo, "login failed", slog.String("remote", "192.0.2.1:1"), slog.String("user", "bob smith"),
		slog.String("mech", "SEED-SHA256"), slog.String("reason", "wrong proof"), slog.Bool("charged", true)), true)
}

// logSameEither is logSame where the record may or may not be formatted
// here (it differs between the formats), only the bytes are compared.
func logSameEither(t *testing.T, r slog.Record) {
	t.Helper()
	for _, json := range []bool{false, true} {
		var want, got lineWrites
		ref := slogHandler(&want, json)
		ref.Handle(context.Background(), r.Clone())
		newLogHandler(&got, json).Handle(context.Background(), r.Clone())
		if !bytes.Equal(got.Bytes(), want.Bytes()) || got.writes != 1 || want.writes != 1 {
			t.Fatalf("json=%v (%d writes, slog %d):\n got %q\nwant %q", json, got.writes, want.writes, got.String(), want.String())
		}
	}
}

type logValuerForTest struct{ name string }

func (v logValuerForTest) LogValue() slog.Value { return slog.StringValue("resolved " + v.name) }

type textMarshalerForTest struct{}

func (textMarshalerForTest) MarshalText() ([]byte, error) { return []byte("marshalled text"), nil }

// TestLogHandlerFallback: what the fast path leaves to slog comes out as
// slog writes it, in one Write, including alongside fast attributes.
func TestLogHandlerFallback(t *testing.T) {
	var nilErr *ProtoError
	for _, a := range []slog.Attr{
		slog.Any("err", errors.New("open auth.db: permission denied")),
		slog.Any("err", fmt.Errorf("wrapped: %w", io.EOF)),
		slog.Any("nil", nil),
		slog.Any("ptr", nilErr),
		slog.Any("bytes", []byte("raw \x00 bytes")),
		slog.Any("map", map[string]int{"a": 1}),
		slog.Any("tm", textMarshalerForTest{}),
		slog.Any("lv", logValuerForTest{"x"}),
		slog.Group("g", slog.Int("a", 1), slog.String("b", "two words")),
		slog.Group("", slog.Int("inlined", 1)),
		slog.Time("far", time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)),
		slog.Group("g", slog.Group("inner", slog.Int("x", 1)), slog.Duration("d", time.Second)),
	} {
		logSame(t, logRecord(slog.LevelInfo, "fallback", slog.String("remote", "r"), a, slog.Int("n", 1)), false)
	}
	// The Record drops an empty group itself; the zero Attr reaches the
	// handler, and slog's elides it.
	logSame(t, logRecord(slog.LevelInfo, "elided", slog.Group("empty"), slog.Int("n", 1)), true)
	logSame(t, logRecord(slog.LevelInfo, "elided", slog.Attr{}, slog.Int("n", 1)), false)
}

func TestLogHandlerDerived(t *testing.T) {
	attrs := []slog.Attr{slog.String("component", "admin"), slog.Int("n", 2)}
	for _, json := range []bool{false, true} {
		var want, got bytes.Buffer
		ref := slogHandler(&want, json)
		h := newLogHandler(&got, json)
		for _, pair := range [][2]slog.Handler{
			{ref.WithAttrs(attrs), h.WithAttrs(attrs)},
			{ref.WithGroup("g"), h.WithGroup("g")},
			{ref.WithGroup("g").WithAttrs(attrs), h.WithGroup("g").WithAttrs(attrs)},
			{ref.WithAttrs(nil), h.WithAttrs(nil)},
			{ref.WithGroup(""), h.WithGroup("")},
		} {
			r := logRecord(slog.LevelWarn, "derived", slog.String("k", "v w"))
			pair[0].Handle(context.Background(), r.Clone())
			pair[1].Handle(context.Background(), r.Clone())
		}
		if got.String() != want.String() {
			t.Fatalf("json=%v:\n got %q\nwant %q", json, got.String(), want.String())
		}
	}
}

// TestLogHandlerLevels: Debug is dropped, as slog drops it, through a
// Logger; the other levels are written.
func TestLogHandlerLevels(t *testing.T) {
	for _, json := range []bool{false, true} {
		var out bytes.Buffer
		ref := slog.NewTextHandler(io.Discard, nil)
		h := newLogHandler(&out, json)
		for _, l := range logLevels {
			if h.Enabled(context.Background(), l) != ref.Enabled(context.Background(), l) {
				t.Fatalf("Enabled(%v) = %v, slog says otherwise", l, !ref.Enabled(context.Background(), l))
			}
		}
		log := slog.New(h)
		log.Debug("dropped", "k", "v")
		if out.Len() != 0 {
			t.Fatalf("debug line written: %q", out.String())
		}
		log.Info("i")
		log.Warn("w")
		log.Error("e")
		if n := strings.Count(out.String(), "\n"); n != 3 {
			t.Fatalf("%d lines for Info, Warn, Error, want 3: %q", n, out.String())
		}
	}
}

// serialWriter fails the test if two Writes overlap or a Write is not
// exactly one line.
type serialWriter struct {
	t        *testing.T
	inFlight atomic.Int32
	lines    atomic.Int32
}

func (w *serialWriter) Write(p []byte) (int, error) {
	if w.inFlight.Add(1) != 1 {
		w.t.Error("two Writes at once")
	}
	if bytes.IndexByte(p, '\n') != len(p)-1 {
		w.t.Errorf("a Write that is not one line: %q", p)
	}
	w.lines.Add(1)
	w.inFlight.Add(-1)
	return len(p), nil
}

// TestLogHandlerSerial: lines from both paths, from many goroutines,
// reach the writer one whole line per Write and never two at once.
func TestLogHandlerSerial(t *testing.T) {
	for _, json := range []bool{false, true} {
		w := &serialWriter{t: t}
		log := slog.New(newLogHandler(w, json))
		const goroutines, each = 8, 200
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					if (g+i)%2 == 0 {
						log.LogAttrs(context.Background(), slog.LevelInfo, "login", slog.String("user", "alice"), slog.Int("i", i))
					} else {
						log.Warn("store unreachable", "err", errors.New("line one\nline two"), "i", i)
					}
				}
			}()
		}
		wg.Wait()
		if n := w.lines.Load(); n != goroutines*each {
			t.Fatalf("%d lines written, want %d", n, goroutines*each)
		}
	}
}

// TestLogHandlerLine: a line written from its attributes, without a
// record, is the line slog writes for the record of them, in one Write;
// an attribute left to slog sends the whole line there.
func TestLogHandlerLine(t *testing.T) {
	closed := func(s string) []slog.Attr {
		return []slog.Attr{slog.String("remote", "192.0.2.1:54321"), slog.String("end", s),
			slog.Duration("duration", 1234*time.Millisecond), slog.Int("commands", 5), slog.Int("logins", 1),
			slog.Int("failed_logins", 0), slog.Int("registrations", 0)}
	}
	var cases [][]slog.Attr
	for _, s := range logTricky {
		cases = append(cases, closed(s), []slog.Attr{slog.String(s, s), slog.Bool("charged", true)})
	}
	cases = append(cases, append(closed("x"), slog.Any("err", errors.New("an error: slog's own"))), nil)
	for _, json := range []bool{false, true} {
		for _, attrs := range cases {
			var want, got lineWrites
			ref := slogHandler(&want, json)
			if err := ref.Handle(context.Background(), logRecord(slog.LevelInfo, "connection closed", attrs...)); err != nil {
				t.Fatal(err)
			}
			if err := newLogHandler(&got, json).line(logRecordTime, slog.LevelInfo, "connection closed", attrs); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want.Bytes()) || got.writes != 1 {
				t.Fatalf("json=%v: %d writes of\n %q\nwant\n %q", json, got.writes, got.String(), want.String())
			}
		}
	}
}

func loginLine(log *slog.Logger) {
	log.LogAttrs(context.Background(), slog.LevelInfo, "login", slog.String("remote", "192.0.2.1:54321"),
		slog.String("user", "alice"), slog.String("mech", MechSCRAM))
}

func TestLogHandlerNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, json := range []bool{false, true} {
		log := slog.New(newLogHandler(io.Discard, json))
		if n := testing.AllocsPerRun(1000, func() { loginLine(log) }); n != 0 {
			t.Fatalf("json=%v: %v allocations for a login line, want 0", json, n)
		}
		// The server's own way, without a record: none even for the
		// seven attributes of "connection closed".
		srv := &Server{log: log}
		if n := testing.AllocsPerRun(1000, func() {
			srv.logAttrs(slog.LevelInfo, "connection closed", slog.String("remote", "192.0.2.1:54321"), slog.String("end", "quit"),
				slog.Duration("duration", time.Second), slog.Int("commands", 3), slog.Int("logins", 1),
				slog.Int("failed_logins", 0), slog.Int("registrations", 0))
		}); n != 0 {
			t.Fatalf("json=%v: %v allocations for a connection's last line, want 0", json, n)
		}
	}
}

// FuzzLogHandler: any message, key and value strings, with the other
// fast kinds alongside, come out as slog writes them.
func FuzzLogHandler(f *testing.F) {
	for i, s := range logTricky {
		if len(s) < 200 {
			f.Add(s, logTricky[(i+1)%len(logTricky)], s, int64(i)-20, int64(logDurations[i%len(logDurations)]), 1.5, i%2 == 0)
		}
	}
	f.Fuzz(func(t *testing.T, msg, key, val string, n, d int64, fl float64, b bool) {
		logSame(t, logRecord(slog.LevelInfo, msg, slog.String(key, val), slog.String("v", val), slog.Int64(key, n),
			slog.Uint64("u", uint64(n)), slog.Duration("d", time.Duration(d)), slog.Bool(key, b), slog.Time("t", time.Unix(0, n))), true)
		tm := time.Unix(0, d).In(time.FixedZone("Z", int(n%50000)))
		if timeInFastRange(tm) {
			logSame(t, slog.NewRecord(tm, slog.LevelWarn, val, 0), true)
		}
		logSameEither(t, logRecord(slog.LevelError, key, slog.Float64(val, fl)))
	})
}

func BenchmarkLogHandler(b *testing.B) {
	lines := []struct {
		name  string
		attrs []slog.Attr
	}{
		{"login", []slog.Attr{slog.String("remote", "192.0.2.1:54321"), slog.String("user", "alice"), slog.String("mech", MechSCRAM)}},
		{"closed", []slog.Attr{slog.String("remote", "192.0.2.1:54321"), slog.String("end", "client quit"),
			slog.Duration("duration", 1234*time.Millisecond), slog.Int("commands", 5), slog.Int("logins", 1),
			slog.Int("failed_logins", 0), slog.Int("registrations", 0)}},
	}
	for _, line := range lines {
		r := slog.NewRecord(time.Now(), slog.LevelInfo, line.name, 0)
		r.AddAttrs(line.attrs...)
		for _, format := range []string{"text", "json"} {
			handlers := []struct {
				name string
				h    slog.Handler
			}{
				{"slog", slog.Handler(slog.NewTextHandler(io.Discard, nil))},
				{"authbox", newLogHandler(io.Discard, false)},
			}
			if format == "json" {
				handlers[0].h, handlers[1].h = slog.NewJSONHandler(io.Discard, nil), newLogHandler(io.Discard, true)
			}
			for _, h := range handlers {
				b.Run(line.name+"/"+format+"/"+h.name, func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						h.h.Handle(context.Background(), r)
					}
				})
			}
		}
	}
}

// TestAppendQuoted: the ASCII fast path quotes as strconv does, for every
// string of two bytes and a few longer ones.
func TestAppendQuoted(t *testing.T) {
	check := func(s string) {
		if got, want := string(appendQuoted([]byte("x"), s)), string(strconv.AppendQuote([]byte("x"), s)); got != want {
			t.Fatalf("appendQuoted(%q) = %s, want %s", s, got, want)
		}
	}
	for a := range 256 {
		for b := range 256 {
			check(string([]byte{byte(a), byte(b)}))
		}
	}
	for _, s := range []string{"", "connection closed", `say "hi" \ bye`, "tab\there", "caf\u00e9 au lait", "\xff\xfe", "del\x7f"} {
		check(s)
	}
}
