package main

// serveraddr.go turns the server address a user gives (--server,
// AUTHBOX_SERVER, client.server) into the host:port the client dials and
// pins. It is the one place that happens, before any known_servers lookup:
// "localhost" and "localhost:7886" must be the same pinned server.

import (
	"fmt"
	"net"
	"strings"
)

// defaultPort is the port of a server address given without one, the
// port of the default listen address in auth.toml.
const defaultPort = "7886"

// normalizeServerAddr returns addr as host:port, with defaultPort when
// addr names only a host: "localhost", "192.0.2.1", "::1" or "[::1]".
func normalizeServerAddr(addr string) (string, error) {
	if addr == "" {
		return "", fmt.Errorf("the server address is empty")
	}
	host, port, err := net.SplitHostPort(addr)
	if err == nil {
		if port == "" {
			return "", fmt.Errorf("%q has no port after the colon", addr)
		}
		return net.JoinHostPort(host, port), nil
	}
	// A bracketed IPv6 literal without a port, or a bare one: "::1" would
	// otherwise read as a host "::" and a port "1" nowhere.
	bare := addr
	if strings.HasPrefix(addr, "[") && strings.HasSuffix(addr, "]") {
		bare = addr[1 : len(addr)-1]
	}
	if ip := net.ParseIP(bare); ip != nil && strings.Contains(bare, ":") {
		return net.JoinHostPort(bare, defaultPort), nil
	}
	if strings.ContainsAny(addr, ":[]") {
		return "", fmt.Errorf("%q is not host or host:port", addr)
	}
	return net.JoinHostPort(addr, defaultPort), nil
}

// serverAddr is normalizeServerAddr with the CLI's message.
func serverAddr(addr string) (string, error) {
	norm, err := normalizeServerAddr(addr)
	if err != nil {
		return "", fail(exitOther, "give HOST or HOST:PORT, e.g. 127.0.0.1:7886 (from --server, AUTHBOX_SERVER or client.server)", "invalid server address: %s", err)
	}
	return norm, nil
}
