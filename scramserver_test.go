package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
)

// rfc7677 is the example exchange of RFC 7677 §3 (user "user", password
// "pencil").
var rfc7677 = struct {
	password, salt        string
	iterations            int
	clientFirst, snonce   string
	serverFirst           string
	clientFinal, sfinal   string
	clientFinalWrongProof string
}{
	password:    "pencil",
	salt:        "W22ZaJ0SNY7soEsUEjb6gQ==",
	iterations:  4096,
	clientFirst: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
	snonce:      "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
	serverFirst: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
	clientFinal: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
	sfinal:      "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
	// The proof's first byte changed (dHzb -> dHzc).
	clientFinalWrongProof: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzcZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
}

func rfc7677Creds(t testing.TB) scramCreds {
	salt, err := base64.StdEncoding.DecodeString(rfc7677.salt)
	if err != nil {
		t.Fatal(err)
	}
	o := fzKeys(t, rfc7677.password, salt, rfc7677.iterations)
	return scramCreds{salt: salt, iters: rfc7677.iterations, storedKey: o.storedKey, serverKey: o.serverKey}
}

func TestLeanSCRAMRFC7677(t *testing.T) {
	creds := rfc7677Creds(t)
	s := newSCRAMServer("", nil)
	defer s.release()
	sf, err := s.firstWithNonce([]byte(rfc7677.clientFirst), creds, []byte(rfc7677.snonce))
	if err != nil || string(sf) != rfc7677.serverFirst {
		t.Fatalf("server-first %q, %v; want the RFC's %q", sf, err, rfc7677.serverFirst)
	}
	fin, err := s.final([]byte(rfc7677.clientFinal))
	if err != nil || string(fin) != rfc7677.sfinal {
		t.Fatalf("server-final %q, %v; want the RFC's %q", fin, err, rfc7677.sfinal)
	}
	if _, err := s.final([]byte(rfc7677.clientFinal)); err == nil {
		t.Fatal("a second client-final was accepted")
	}
}

// TestLeanSCRAMRefusals runs the RFC's exchange with one thing wrong at a
// time, and checks which refusal each gets.
func TestLeanSCRAMRefusals(t *testing.T) {
	creds := rfc7677Creds(t)
	nonce := "rOprNGfwEbeRWgbNEkqO" + rfc7677.snonce
	proof := "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	for _, tc := range []struct {
		final string
		want  error
	}{
		{rfc7677.clientFinalWrongProof, errSCRAMProof},
		{"c=biws,r=" + nonce + "x," + proof, errSCRAMNonce},
		{"c=biws,r=" + nonce[:len(nonce)-1] + "," + proof, errSCRAMNonce},
		{"c=eSws,r=" + nonce + "," + proof, errSCRAMBinding},
		{"c=biws,r=" + nonce + ",p=" + base64.StdEncoding.EncodeToString(make([]byte, 31)), errSCRAMProofLen},
		{"c=biws,r=" + nonce, errSCRAMMalformed},
		{"c=biws,p=x,r=" + nonce, errSCRAMMalformed},
		{"c=biws,r=" + nonce + ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ", errSCRAMMalformed},
		// An extension between r= and p= is signed as part of the message.
		{"c=biws,r=" + nonce + ",x=1," + proof, errSCRAMProof},
	} {
		s := newSCRAMServer("", nil)
		if _, err := s.firstWithNonce([]byte(rfc7677.clientFirst), creds, []byte(rfc7677.snonce)); err != nil {
			t.Fatal(err)
		}
		if fin, err := s.final([]byte(tc.final)); err != tc.want {
			t.Errorf("client-final %q: %q, %v; want %v", tc.final, fin, err, tc.want)
		}
		s.release()
	}
}

// raceEnabled is set under -race (race_test.go).
var raceEnabled bool

// TestLeanSCRAMNoAllocs: a login through scramServer allocates nothing
// once its buffers exist, which is why it is here at all.
func TestLeanSCRAMNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	creds := rfc7677Creds(t)
	s := scramServers.New().(*scramServer)
	c1, c2 := []byte(rfc7677.clientFirst), []byte(rfc7677.clientFinal)
	var fin []byte
	allocs := testing.AllocsPerRun(100, func() {
		s.state = 0
		if _, err := s.firstWithNonce(c1, creds, []byte(rfc7677.snonce)); err != nil {
			t.Fatal(err)
		}
		var err error
		if fin, err = s.final(c2); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 || !bytes.Equal(fin, []byte(rfc7677.sfinal)) {
		t.Fatalf("%v allocations per login (server-final %q), want 0", allocs, fin)
	}
	allocs = testing.AllocsPerRun(100, func() {
		s.state = 0
		if _, err := s.first(c1, creds); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations for server-first with a random nonce, want 0", allocs)
	}
}

// TestHMACPadded checks the hand-rolled HMAC against crypto/hmac for keys
// shorter than, as long as and longer than a block, and that fakeSalt,
// built on it, gives every name the fake salt it had with crypto/hmac (a
// fake salt must not change from one version to the next).
func TestHMACPadded(t *testing.T) {
	for _, kl := range []int{0, 1, 32, 63, 64, 65, 200} {
		for _, ml := range []int{0, 1, 55, 56, 64, 200} {
			key := bytes.Repeat([]byte{byte(kl) | 1}, kl)
			msg := bytes.Repeat([]byte{'m'}, ml)
			m := hmac.New(sha256.New, key)
			m.Write(msg)
			want := m.Sum(nil)
			buf := append(make([]byte, hmacBlock), msg...)
			if got := hmacPadded(key, buf); !bytes.Equal(got[:], want) {
				t.Errorf("key %d bytes, message %d bytes: %x, want %x", kl, ml, got, want)
			}
			if !bytes.Equal(buf[:hmacBlock], make([]byte, hmacBlock)) || !bytes.Equal(buf[hmacBlock:], msg) {
				t.Errorf("key %d bytes, message %d bytes: the buffer was left changed", kl, ml)
			}
		}
	}
	secret := bytes.Repeat([]byte{0x5a}, 32)
	for _, name := range []string{"", "alice", strings.Repeat("n", 200)} {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte("scram\x00" + name))
		if got := fakeSalt([]byte("kept"), secret, "scram", name); !bytes.Equal(got, append([]byte("kept"), m.Sum(nil)...)) {
			t.Errorf("fakeSalt for a %d-byte name differs from crypto/hmac's", len(name))
		}
	}
	// Two secrets in turn (two stores in one process): each salt is its
	// own secret's.
	other := bytes.Repeat([]byte{0xa5}, 32)
	for i := range 4 {
		key := [][]byte{secret, other}[i%2]
		m := hmac.New(sha256.New, key)
		m.Write([]byte("seed\x00bob"))
		if got := fakeSalt(nil, key, "seed", "bob"); !bytes.Equal(got, m.Sum(nil)) {
			t.Errorf("fakeSalt under secret %d of two, in turn, differs from crypto/hmac's", i%2)
		}
	}
	dst := make([]byte, 0, KeyLen)
	// Under the race detector sync.Pool drops some of what it is given,
	// so the pooled HMACs are made again now and then.
	if n := testing.AllocsPerRun(100, func() { fakeSalt(dst, secret, "scram", "alice") }); n != 0 && !raceEnabled {
		t.Errorf("fakeSalt into a buffer with room: %v allocations, want 0", n)
	}
}
