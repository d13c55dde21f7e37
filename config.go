package main

// config.go reads auth.toml. The file in the repo is embedded and decoded
// first, so the defaults live in exactly one place and the documented file
// cannot drift from the code.

import (
	_ "embed"
	"encoding"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

//go:embed auth.toml
var defaultConfigTOML string

// Config is auth.toml.
type Config struct {
	Listen           string   `toml:"listen"`
	DB               string   `toml:"db"`
	Queue            int      `toml:"queue"`
	QueueTimeout     Duration `toml:"queue_timeout"`
	Workers          int      `toml:"workers"`
	Iterations       int      `toml:"iterations"`
	Mechanisms       []string `toml:"mechanisms"`
	OpenRegistration bool     `toml:"open_registration"`
	LineTimeout      Duration `toml:"line_timeout"`
	SessionTimeout   Duration `toml:"session_timeout"`
	ShutdownTimeout  Duration `toml:"shutdown_timeout"`
	MetricsListen    string   `toml:"metrics_listen"`
	LogFormat        string   `toml:"log_format"`

	TLS                   bool   `toml:"tls"`
	TLSCertFile           string `toml:"tls_cert_file"`
	TLSKeyFile            string `toml:"tls_key_file"`
	RequireChannelBinding bool   `toml:"require_channel_binding"`

	MaxConnsPerSource   int      `toml:"max_conns_per_source"`
	SourceFailures      int      `toml:"source_failures"`
	SourceFailureRefill Duration `toml:"source_failure_refill"`
	UserFailures        int      `toml:"user_failures"`
	UserFailureRefill   Duration `toml:"user_failure_refill"`
	ThrottleEntries     int      `toml:"throttle_entries"`

	// Store is "bbolt" (the db file) or "etcd" (the [etcd] cluster).
	Store string     `toml:"store"`
	Etcd  EtcdConfig `toml:"etcd"`

	Client ClientConfig `toml:"client"`
}

// ClientConfig is the [client] table.
type ClientConfig struct {
	Server            string `toml:"server"`
	TLS               bool   `toml:"tls"`
	KnownServers      string `toml:"known_servers"`
	CAFile            string `toml:"ca_file"`
	MaxIterations     int    `toml:"max_iterations"`
	LegacyFallback    bool   `toml:"legacy_fallback"`
	MinPasswordLength int    `toml:"min_password_length"`
	RequireDigit      bool   `toml:"require_digit"`
	RequireLower      bool   `toml:"require_lower"`
	RequireUpper      bool   `toml:"require_upper"`
}

// Duration is a time.Duration written as "10s" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration like \"10s\": %q", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes a Go duration string as a person would write it in
// auth.toml: "5m", not time.Duration's "5m0s".
func (d Duration) MarshalText() ([]byte, error) {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return []byte(s), nil
}

// DefaultConfig returns the embedded auth.toml.
func DefaultConfig() Config {
	var c Config
	if _, err := toml.Decode(defaultConfigTOML, &c); err != nil {
		panic("embedded auth.toml: " + err.Error())
	}
	return c
}

// LoadConfig returns the defaults overlaid with the file at path, if any.
// Every error names the file, and the key where there is one.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	if path == "" {
		return c, c.Validate()
	}
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		var perr toml.ParseError
		var patherr *fs.PathError
		if errors.As(err, &patherr) {
			return c, fmt.Errorf("config %s: %w", path, patherr.Err)
		}
		if errors.As(err, &perr) {
			if why, ok := unquotedString(path, perr); ok {
				return c, fmt.Errorf("config %s: line %d: key %s", path, perr.Position.Line, why)
			}
			if perr.LastKey != "" {
				return c, fmt.Errorf("config %s: line %d: key %s: %s", path, perr.Position.Line, perr.LastKey, perr.Message)
			}
			return c, fmt.Errorf("config %s: line %d: %s", path, perr.Position.Line, perr.Message)
		}
		// The TOML decoder's own type errors read "toml: line N (last
		// key K): ..."; the file name says where already.
		return c, fmt.Errorf("config %s: %s", path, strings.TrimPrefix(err.Error(), "toml: "))
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return c, fmt.Errorf("config %s: unknown key %s", path, strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// unquotedString reports whether perr is the TOML parser failing on a bare
// value (listen = 127.0.0.1:7886, line_timeout = 10s) for a key whose value
// is a string: the parser then complains about a float or a date, which
// misleads. why names the key and shows it with its default value, quoted.
func unquotedString(path string, perr toml.ParseError) (why string, ok bool) {
	data, err := os.ReadFile(path)
	lines := strings.Split(string(data), "\n")
	if err != nil || perr.Position.Line < 1 || perr.Position.Line > len(lines) {
		return "", false
	}
	name, raw, found := strings.Cut(lines[perr.Position.Line-1], "=")
	// Only a value written without quotes: a quoted one that fails is
	// some other mistake, which the parser's message names.
	if raw = strings.TrimSpace(raw); !found || raw == "" || raw[0] == '"' || raw[0] == '\'' {
		return "", false
	}
	key := perr.LastKey
	if key == "" {
		// The parser read "10" of 10s as a number and failed after it,
		// before it named the key: the key is the line's, in the table
		// the last [header] above it opens.
		key = strings.TrimSpace(name)
		for l := perr.Position.Line - 2; l >= 0; l-- {
			if h := strings.TrimSpace(lines[l]); strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
				key = strings.Trim(h, "[] ") + "." + key
				break
			}
		}
	}
	def, found := configField(reflect.ValueOf(DefaultConfig()), strings.Split(key, "."))
	if !found {
		return "", false
	}
	var value string
	if m, isText := def.Interface().(encoding.TextMarshaler); isText {
		b, _ := m.MarshalText()
		value = string(b)
	} else if def.Kind() == reflect.String {
		value = def.String()
	} else {
		return "", false
	}
	if value == "" {
		value = "…"
	}
	keys := strings.Split(key, ".")
	return key + ": the value must be a quoted string, e.g. " + fmt.Sprintf("%s = %q", keys[len(keys)-1], value), true
}

// configField finds the field of v (a Config, or a table in it) that the
// dotted TOML key names.
func configField(v reflect.Value, key []string) (reflect.Value, bool) {
	for i := 0; i < v.NumField(); i++ {
		if tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("toml"), ","); tag == key[0] {
			f := v.Field(i)
			if len(key) == 1 {
				return f, true
			}
			if f.Kind() == reflect.Struct {
				return configField(f, key[1:])
			}
		}
	}
	return reflect.Value{}, false
}

// Validate checks each key's value; errors name the key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("key %s: %s", key, fmt.Sprintf(format, args...)))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port", c.Listen)
	}
	if c.DB == "" {
		bad("db", "must not be empty")
	}
	if c.Queue < 1 || c.Queue > 1<<16 {
		bad("queue", "must be 1 to 65536, got %d", c.Queue)
	}
	if c.Workers < 1 || c.Workers > 1<<16 {
		bad("workers", "must be 1 to 65536, got %d", c.Workers)
	}
	if c.Iterations < MinIterations {
		bad("iterations", "must be at least %d, got %d", MinIterations, c.Iterations)
	}
	if c.Iterations > 1<<31-1 {
		bad("iterations", "too large: %d", c.Iterations)
	}
	c.validateTransport(bad)
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			bad("metrics_listen", "%q is not host:port (or \"\" for none)", c.MetricsListen)
		} else if c.MetricsListen == c.Listen {
			bad("metrics_listen", "must differ from listen: the protocol port never speaks HTTP")
		}
	}
	switch c.Store {
	case "bbolt":
	case "etcd":
		c.Etcd.validate(bad)
	default:
		bad("store", "must be \"bbolt\" or \"etcd\", got %q", c.Store)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log_format", "must be \"text\" or \"json\", got %q", c.LogFormat)
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"queue_timeout", c.QueueTimeout}, {"line_timeout", c.LineTimeout}, {"session_timeout", c.SessionTimeout}, {"shutdown_timeout", c.ShutdownTimeout},
		{"source_failure_refill", c.SourceFailureRefill}, {"user_failure_refill", c.UserFailureRefill}} {
		if d.v.Duration <= 0 {
			bad(d.key, "must be positive, got %s", d.v)
		}
	}
	for _, k := range []struct {
		key string
		v   int
	}{{"max_conns_per_source", c.MaxConnsPerSource}, {"source_failures", c.SourceFailures}, {"user_failures", c.UserFailures}} {
		if k.v < 1 || k.v > 1<<20 {
			bad(k.key, "must be 1 to %d, got %d", 1<<20, k.v)
		}
	}
	if c.ThrottleEntries < 100 || c.ThrottleEntries > 1<<24 {
		bad("throttle_entries", "must be 100 to %d, got %d", 1<<24, c.ThrottleEntries)
	}
	if c.Client.MaxIterations < MinIterations {
		bad("client.max_iterations", "must be at least %d, got %d", MinIterations, c.Client.MaxIterations)
	}
	if c.Client.MinPasswordLength < 1 {
		bad("client.min_password_length", "must be at least 1, got %d", c.Client.MinPasswordLength)
	}
	return errors.Join(errs...)
}

// validateTransport checks the mechanisms and the TLS keys, which depend
// on each other.
func (c *Config) validateTransport(bad func(key, format string, args ...any)) {
	known := []string{MechPlus, MechSCRAM, MechSeed}
	if len(c.Mechanisms) == 0 {
		bad("mechanisms", "must list at least one of %s", strings.Join(known, ", "))
	}
	for i, m := range c.Mechanisms {
		if !slices.Contains(known, m) {
			bad("mechanisms", "unknown mechanism %q (known: %s)", m, strings.Join(known, ", "))
		} else if slices.Index(c.Mechanisms, m) != i {
			bad("mechanisms", "%q is listed twice", m)
		}
	}
	if !c.TLS && len(c.Mechanisms) > 0 && !slices.ContainsFunc(c.Mechanisms, func(m string) bool { return m != MechPlus }) {
		bad("mechanisms", "%s alone cannot work with tls = false: it needs TLS", MechPlus)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("tls_cert_file", "tls_cert_file and tls_key_file go together: give both or neither")
	}
	if c.RequireChannelBinding && !c.TLS {
		bad("require_channel_binding", "needs tls = true: channel binding exists only inside TLS")
	}
	if c.RequireChannelBinding && !c.HasMech(MechPlus) {
		bad("require_channel_binding", "needs %s in mechanisms", MechPlus)
	}
}

// HasMech reports whether a mechanism is enabled in the config (whether a
// connection offers it depends on its transport too: see Offered).
func (c *Config) HasMech(m string) bool { return slices.Contains(c.Mechanisms, m) }

// Offered is what a connection offers, in order of preference (spec §9.3):
// over TLS SCRAM-SHA-256-PLUS first, then the others, or PLUS alone when
// channel binding is required; over plain TCP never PLUS.
func (c *Config) Offered(overTLS bool) []string {
	var out []string
	if overTLS && c.HasMech(MechPlus) {
		out = append(out, MechPlus)
		if c.RequireChannelBinding {
			return out
		}
	}
	for _, m := range c.Mechanisms {
		if m != MechPlus {
			out = append(out, m)
		}
	}
	return out
}
