package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// TestAdminPeerCheck: the client talks only to an admin socket served by
// its own user or root.
func TestAdminPeerCheck(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "x.sock")
	for _, tc := range []struct {
		peer uint32
		euid int
		ok   bool
	}{{1000, 1000, true}, {0, 1000, true}, {0, 0, true}, {1001, 1000, false}, {1000, 0, false}} {
		err := adminPeerAllowed(sock, tc.peer, tc.euid)
		if (err == nil) != tc.ok {
			t.Errorf("peer %d, us %d: %v", tc.peer, tc.euid, err)
		}
		if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("refusing the admin socket %s: it is served by uid %d, not by you (uid %d) or root", sock, tc.peer, tc.euid)) {
			t.Errorf("message: %v", err)
		}
	}
	// The real check reads the peer's uid from the socket: ours.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := checkAdminPeer(nc.(*net.UnixConn), sock); err != nil {
		t.Fatal(err)
	}
}

// TestAdminClientServerDiesMidCommand: a server that hangs up inside its
// reply is the server's failure, exit 2, with what arrived already shown.
func TestAdminClientServerDiesMidCommand(t *testing.T) {
	db := filepath.Join(t.TempDir(), "test.db")
	ln, err := net.Listen("unix", AdminSocketPath(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	for _, tc := range []struct{ reply, printed string }{
		{`{"stream":"stdout","len":5}` + "\nab", "ab"},
		{`{"stream":"stdout","len":2}` + "\nab" + "not json\n", "ab"},
		{`{"stream":"elsewhere","len":1}` + "\nx", ""},
	} {
		reply := tc.reply
		served := make(chan struct{})
		go func() {
			defer close(served)
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, reply)
		}()
		var out bytes.Buffer
		ac := &adminClient{db: db, out: adminOut{Stdout: &out, Stderr: io.Discard}}
		err := ac.run(adminRequest{Op: opList}, nil, false)
		<-served
		var ce *cliError
		if !errors.As(err, &ce) || ce.code != exitOther || !strings.HasPrefix(ce.msg, "the server's admin socket failed mid-command: ") || ce.hint != "see the server's log" || out.String() != tc.printed {
			t.Errorf("reply %q: %v, printed %q", reply, err, out.String())
		}
	}
}
