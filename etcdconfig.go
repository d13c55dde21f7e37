package main

// etcdconfig.go is the [etcd] table of auth.toml and the client settings
// it makes for etcd's own transport (authentication and TLS).

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
)

// EtcdConfig is the [etcd] table of auth.toml.
type EtcdConfig struct {
	Endpoints    []string `toml:"endpoints"`
	Prefix       string   `toml:"prefix"`
	DialTimeout  Duration `toml:"dial_timeout"`
	Username     string   `toml:"username"`
	PasswordFile string   `toml:"password_file"`
	CertFile     string   `toml:"cert_file"`
	KeyFile      string   `toml:"key_file"`
	CAFile       string   `toml:"ca_file"`
}

// validate checks the table; bad is Config.Validate's reporter.
func (e *EtcdConfig) validate(bad func(key, format string, args ...any)) {
	if len(e.Endpoints) == 0 {
		bad("etcd.endpoints", "must list at least one etcd member (host:port or URL) with store = \"etcd\"")
	}
	if e.Prefix == "" || !strings.HasSuffix(e.Prefix, "/") {
		bad("etcd.prefix", "must end in \"/\", got %q", e.Prefix)
	}
	if e.DialTimeout.Duration <= 0 {
		bad("etcd.dial_timeout", "must be positive, got %s", e.DialTimeout)
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		bad("etcd.cert_file", "etcd.cert_file and etcd.key_file go together: give both or neither")
	}
	if (e.Username == "") != (e.PasswordFile == "") {
		bad("etcd.username", "etcd.username and etcd.password_file go together: give both or neither")
	}
}

// etcdTLS is the client TLS for etcd's own transport.
func etcdTLS(cfg EtcdConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd.ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd.ca_file %s: no PEM certificate in it", cfg.CAFile)
		}
	}
	if cfg.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}
