package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// TestAdminWireBytes pins the lines adminwire.go describes, in both
// directions, to the byte: the one frame head and writer must make what
// the two codecs before them made.
func TestAdminWireBytes(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `{"end":true}` + "\n"},
		{"abc", `{"len":3}` + "\nabc" + `{"end":true,"total":3}` + "\n"},
	} {
		var b bytes.Buffer
		if readErr, writeErr := sendUpload(&b, strings.NewReader(tc.in)); readErr != nil || writeErr != nil || b.String() != tc.want {
			t.Errorf("upload of %q: %q %v %v, want %q", tc.in, b.String(), readErr, writeErr, tc.want)
		}
	}
	// A big input goes in frames of adminFrameMax at most.
	var b bytes.Buffer
	big := strings.Repeat("x", adminFrameMax+1)
	sendUpload(&b, strings.NewReader(big))
	if want := fmt.Sprintf(`{"len":%d}`+"\n%s"+`{"len":1}`+"\nx"+`{"end":true,"total":%d}`+"\n", adminFrameMax, big[:adminFrameMax], len(big)); b.String() != want {
		t.Errorf("a big upload: %.80q...", b.String())
	}
	// An input that cannot be read leaves the upload cut: no end line.
	b.Reset()
	readErr, writeErr := sendUpload(&b, io.MultiReader(strings.NewReader("ab"), iotest.ErrReader(errors.New("disk on fire"))))
	if fmt.Sprint(readErr) != "disk on fire" || writeErr != nil || b.String() != `{"len":2}`+"\nab" {
		t.Errorf("a failed read: %q %v %v", b.String(), readErr, writeErr)
	}

	b.Reset()
	fw := newFrameWriter(&b)
	io.WriteString(fw.stream("stdout"), "out")
	io.WriteString(fw.stream("stderr"), "")
	io.WriteString(fw.stream("file"), "f")
	exit := 1
	fw.end(adminFrame{Exit: &exit, Error: `no account named "<x>"`, Hint: "h"})
	want := `{"stream":"stdout","len":3}` + "\nout" + `{"stream":"file","len":1}` + "\nf" +
		`{"end":true,"exit":1,"error":"no account named \"\u003cx\u003e\"","hint":"h"}` + "\n"
	if b.String() != want {
		t.Errorf("server frames:\n%q, want\n%q", b.String(), want)
	}
	b.Reset()
	fw = newFrameWriter(&b)
	exit = 0
	fw.end(adminFrame{Exit: &exit})
	if b.String() != `{"end":true,"exit":0}`+"\n" {
		t.Errorf("a success's end: %q", b.String())
	}
}

// TestFrameWriterKeepsItsError: after a failed write, nothing more goes
// out, and each write says why.
func TestFrameWriterKeepsItsError(t *testing.T) {
	fail := errors.New("peer gone")
	fw := &frameWriter{w: bufio.NewWriterSize(errWriter{fail}, 16)}
	if n, err := fw.write("stdout", []byte(strings.Repeat("x", 64))); n != 0 || err != fail {
		t.Fatalf("write: %d %v", n, err)
	}
	if _, err := fw.stream("stderr").Write([]byte("y")); err != fail {
		t.Fatalf("the next write: %v", err)
	}
	if err := fw.end(adminFrame{}); err != fail {
		t.Fatalf("end: %v", err)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

// chunk is what one stream got, in the order the frames came.
type chunk struct {
	stream string
	data   string
}

// recorder collects the frames playFrames plays, in their order, joining
// the writes that one frame's copy may be split into.
type recorder struct{ chunks []chunk }

func (r *recorder) out() adminOut {
	return adminOut{Stdout: recStream{r, "stdout"}, Stderr: recStream{r, "stderr"}, File: recStream{r, "file"}}
}

type recStream struct {
	r    *recorder
	name string
}

func (s recStream) Write(p []byte) (int, error) {
	if n := len(s.r.chunks); n > 0 && s.r.chunks[n-1].stream == s.name {
		s.r.chunks[n-1].data += string(p)
	} else {
		s.r.chunks = append(s.r.chunks, chunk{s.name, string(p)})
	}
	return len(p), nil
}

// decodeUpload reads data as the server reads an upload.
func decodeUpload(data []byte) ([]byte, error) {
	return io.ReadAll(&uploadReader{r: bufio.NewReader(bytes.NewReader(data))})
}

// FuzzAdminWire feeds both of the admin socket's readers. The upload
// reader (the server's) either gives back bytes that the writer frames to
// the same bytes again, or fails with ErrUploadBad or ErrUploadCut, and
// then an import imports nothing. The frame player (the client's) either
// plays frames that the writer frames to the same again, or fails.
func FuzzAdminWire(f *testing.F) {
	line := "user," + rfcPGVerifier + "\n"
	upload := fmt.Sprintf(`{"len":%d}`+"\n%s"+`{"end":true,"total":%d}`+"\n", len(line), line, len(line))
	for _, s := range []string{upload, upload[:len(upload)-3], upload[:20], `{"len":3}` + "\nabc" + `{"end":true,"total":2}` + "\n", `{"end":true}` + "\n", "user,x\n", `{"len":-1}` + "\n"} {
		f.Add(true, []byte(s))
	}
	for _, s := range []string{
		`{"stream":"stdout","len":3}` + "\nabc" + `{"stream":"stderr","len":1}` + "\nx" + `{"end":true,"exit":0}` + "\n",
		`{"stream":"file","len":2}` + "\nab" + `{"end":true,"exit":1,"error":"e","hint":"h"}` + "\n",
		`{"stream":"nope","len":1}` + "\nx", `{"stream":"stdout","len":5}` + "\nab", `{"end":true,"exit":0}`, "{\n",
	} {
		f.Add(false, []byte(s))
	}
	f.Fuzz(func(t *testing.T, toServer bool, data []byte) {
		if toServer {
			fuzzUpload(t, data)
		} else {
			fuzzPlay(t, data)
		}
	})
}

func fuzzUpload(t *testing.T, data []byte) {
	got, err := decodeUpload(data)
	if err != nil {
		if !errors.Is(err, ErrUploadBad) && !errors.Is(err, ErrUploadCut) {
			t.Fatalf("upload error %v is neither ErrUploadBad nor ErrUploadCut", err)
		}
		// Whatever the frames held, the import stops before the store.
		in := &uploadReader{r: bufio.NewReader(bytes.NewReader(data))}
		opened := false
		open := func() (Storage, error) { opened = true; return nil, errors.New("no store here") }
		ierr := adminImport(open, adminRequest{Op: opImport, Format: FormatPG, File: "x.pg"}, in, adminOut{Stdout: io.Discard, Stderr: io.Discard})
		var ae *AdminError
		if opened || !errors.As(ierr, &ae) || !strings.Contains(ae.Msg, "reading x.pg") {
			t.Fatalf("a bad upload (%v) reached the store (%v) or failed otherwise: %v", err, opened, ierr)
		}
		return
	}
	var enc bytes.Buffer
	if readErr, writeErr := sendUpload(&enc, bytes.NewReader(got)); readErr != nil || writeErr != nil {
		t.Fatal(readErr, writeErr)
	}
	again, err := decodeUpload(enc.Bytes())
	if err != nil || !bytes.Equal(again, got) {
		t.Fatalf("%q decoded to %q, framed again to %q, which decodes to %q (%v)", data, got, enc.Bytes(), again, err)
	}
}

func fuzzPlay(t *testing.T, data []byte) {
	var rec recorder
	ac := &adminClient{out: rec.out()}
	end, err := ac.playFrames(bufio.NewReader(bytes.NewReader(data)))
	if err != nil {
		return // the client says the socket failed mid-command
	}
	if !end.End {
		t.Fatalf("playFrames ended without an error or an end frame: %+v", end)
	}
	var enc bytes.Buffer
	fw := newFrameWriter(&enc)
	for _, c := range rec.chunks {
		if _, err := fw.stream(c.stream).Write([]byte(c.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := fw.end(adminFrame{Exit: end.Exit, Error: end.Error, Hint: end.Hint}); err != nil {
		t.Fatal(err)
	}
	var rec2 recorder
	ac2 := &adminClient{out: rec2.out()}
	end2, err := ac2.playFrames(bufio.NewReader(&enc))
	if err != nil || !slices.Equal(rec.chunks, rec2.chunks) || !sameEnd(end, end2) {
		t.Fatalf("%q played %+v %+v; framed again as %q it plays %+v %+v (%v)", data, rec.chunks, end, enc.Bytes(), rec2.chunks, end2, err)
	}
}

func sameEnd(a, b adminFrame) bool {
	return (a.Exit == nil) == (b.Exit == nil) && (a.Exit == nil || *a.Exit == *b.Exit) && a.Error == b.Error && a.Hint == b.Hint
}
