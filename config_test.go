package main

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestConfigErrorsNameKeyAndFile(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ body, want string }{
		{"listn = \"x\"\n", "unknown key listn"},
		{"[client]\nmax_iteration = 5\n", "unknown key client.max_iteration"},
		{"iterations = 100\n", "key iterations"},
		{"iterations = \"many\"\n", "iterations"},
		{"mechanisms = [\"MD5\"]\n", "key mechanisms"},
		{"line_timeout = \"soon\"\n", "line_timeout"},
		{"queue = 0\n", "key queue"},
		{"listen = \"nope\"\n", "key listen"},
		{"this is not toml\n", "config"},
	}
	for i, tc := range cases {
		path := filepath.Join(dir, fmt.Sprintf("c%d.toml", i))
		os.WriteFile(path, []byte(tc.body), 0o600)
		_, err := LoadConfig(path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: error %v, want it to name %q and the file", tc.body, err, tc.want)
		}
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("a missing config file is not an error")
	}
	// A file that sets one key keeps every other default.
	path := filepath.Join(dir, "ok.toml")
	os.WriteFile(path, []byte("queue = 3\n"), 0o600)
	cfg, err := LoadConfig(path)
	if err != nil || cfg.Queue != 3 || cfg.Iterations != 600000 || cfg.Listen != "127.0.0.1:7886" {
		t.Fatalf("overlay: %+v, %v", cfg, err)
	}
}

// TestConfigUnquotedString checks that a string value written without
// quotes is named as that, with the key and an example, and not as the
// float or date the TOML parser took it for; other mistakes keep the
// parser's message.
func TestConfigUnquotedString(t *testing.T) {
	dir := t.TempDir()
	for i, tc := range []struct{ body, want string }{
		{"listen = 127.0.0.1:7886\n", `line 1: key listen: the value must be a quoted string, e.g. listen = "127.0.0.1:7886"`},
		{"queue = 3\nline_timeout = 10s\n", `line 2: key line_timeout: the value must be a quoted string, e.g. line_timeout = "10s"`},
		{"[client]\nserver = 10.0.0.1:7886\n", `line 2: key client.server: the value must be a quoted string, e.g. server = "127.0.0.1:7886"`},
		{"tls_cert_file = /etc/authbox/cert.pem\n", `line 1: key tls_cert_file: the value must be a quoted string, e.g. tls_cert_file = "…"`},
		{"iterations = 600000x\n", "line 1: expected a top-level item to end"},
		{"tls = yes\n", `line 1: key tls: expected value but found "yes" instead`},
	} {
		path := filepath.Join(dir, fmt.Sprintf("c%d.toml", i))
		os.WriteFile(path, []byte(tc.body), 0o600)
		_, err := LoadConfig(path)
		if err == nil || !strings.HasPrefix(err.Error(), "config "+path+": "+tc.want) {
			t.Errorf("%q: error %v, want %q", tc.body, err, tc.want)
		}
	}
}

func TestDefaultsAreDocumented(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:7886" || cfg.Queue != 8 || cfg.Iterations != 600000 ||
		strings.Join(cfg.Mechanisms, " ") != "SCRAM-SHA-256-PLUS SCRAM-SHA-256" || !cfg.OpenRegistration || cfg.Client.MaxIterations != 10000000 ||
		!cfg.TLS || cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" || cfg.RequireChannelBinding || !cfg.Client.TLS {
		t.Fatalf("defaults drifted from the issue: %+v", cfg)
	}
}

// TestConfigCommand: "authbox config" prints every key, and reads back as
// the configuration it describes; --changed prints only what a file
// changes, and nothing for the defaults.
func TestConfigCommand(t *testing.T) {
	dir := t.TempDir()
	r := runCLI(t, dir, "", nil, "config")
	var back Config
	if _, err := toml.Decode(r.stdout, &back); r.code != 0 || err != nil || !reflect.DeepEqual(back, DefaultConfig()) {
		t.Errorf("config: %v %+v\nread back: %+v", err, r, back)
	}
	for _, key := range []string{"listen = ", "throttle_entries = ", "\n[client]\n", "require_upper = "} {
		if !strings.Contains(r.stdout, key) {
			t.Errorf("config lacks %q:\n%s", key, r.stdout)
		}
	}
	if r := runCLI(t, dir, "", nil, "config", "--changed"); r.code != 0 || r.stdout != "" {
		t.Errorf("config --changed with the defaults: %+v", r)
	}
	cfg := writeConfig(t, dir, "queue_timeout = \"5s\"\nmechanisms = [\"SCRAM-SHA-256\"]\n[client]\nserver = \"auth.example:7000\"\n")
	want := "queue_timeout = \"5s\"\niterations = 4096\nmechanisms = [\"SCRAM-SHA-256\"]\n\n[client]\nserver = \"auth.example:7000\"\n"
	if r := runCLI(t, dir, "", nil, "config", "--changed", "--config", cfg); r.code != 0 || r.stdout != want {
		t.Errorf("config --changed:\n%s\nwant:\n%s", r.stdout, want)
	}
}

// TestDurationPrintsAsWritten: a duration prints as auth.toml writes it,
// and reads back as the same duration.
func TestDurationPrintsAsWritten(t *testing.T) {
	for in, want := range map[time.Duration]string{
		5 * time.Minute: "5m", time.Hour: "1h", 90 * time.Minute: "1h30m",
		10 * time.Second: "10s", 100 * time.Millisecond: "100ms", 3*time.Minute + 5*time.Second: "3m5s", 0: "0s",
	} {
		b, _ := Duration{in}.MarshalText()
		var back Duration
		if string(b) != want || back.UnmarshalText(b) != nil || back.Duration != in {
			t.Errorf("%v prints %q (want %q), reads back %v", in, b, want, back.Duration)
		}
	}
}
