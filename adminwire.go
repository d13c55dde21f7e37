package main

// adminwire.go is the framing of the admin socket. One request per
// connection:
//
//	client: one JSON line (adminRequest); for an import, then the input
//	        file's bytes in frames, each a JSON line {"len":N} and N
//	        bytes, and last one JSON line {"end":true,"total":T}, T being
//	        the sum of the Ns; then it half-closes. An upload without its
//	        end line, or whose total is not what arrived, was cut off (the
//	        client died, or could not read its input): nothing of it is
//	        imported.
//	server: frames, each a JSON line {"stream":S,"len":N} and N bytes,
//	        S being "stdout", "stderr" or "file" (the output file of a
//	        backup or an export, which the client writes); and last one
//	        JSON line {"end":true,"exit":C,"error":…,"hint":…}, C being 0,
//	        or an AdminErrorKind.
//
// Both directions use the one frame head, adminFrame, and the one writer,
// frameWriter: an upload is frames of no stream.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

const (
	// maxAdminLine bounds a JSON line: the request, or a frame's head
	// (not the bytes a frame carries).
	maxAdminLine = 64 << 10
	// adminFrameMax is the largest frame written; bigger writes are split.
	adminFrameMax = 64 << 10
)

var (
	// ErrUploadCut is returned when an import's upload ends before its end
	// line: the client stopped before the end of its input.
	ErrUploadCut = errors.New("the upload was cut off before the end of the file")
	// ErrUploadBad is returned when an import's upload is not made of
	// frames as adminwire.go describes, or its total is not what arrived.
	ErrUploadBad = errors.New("the upload is malformed")
	// ErrFrameCut is returned when the connection ends inside a frame's
	// head line.
	ErrFrameCut = errors.New("the connection ended inside a frame head")
	// ErrFrameBad is returned when a frame's head line is not a JSON frame
	// head.
	ErrFrameBad = errors.New("a frame head is not JSON")
	// errLineTooLong is returned when a JSON line is over maxAdminLine.
	errLineTooLong = errors.New("admin request line too long")
)

// readAdminLine reads one JSON line, bounded by maxAdminLine. At the
// end of the connection it returns what came before, which may lack its LF.
func readAdminLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		part, err := r.ReadSlice('\n')
		line = append(line, part...)
		if len(line) > maxAdminLine {
			return nil, errLineTooLong
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && (len(line) == 0 || !errors.Is(err, io.EOF)) {
			return nil, err
		}
		return line, nil
	}
}

// adminFrame heads a frame of either direction, or ends it. Its fields'
// order and omitempty make the lines adminwire.go describes: an upload
// frame has no stream, and only the server's end has an exit code, which
// is why Exit is a pointer (its 0 is written).
type adminFrame struct {
	Stream string `json:"stream,omitempty"`
	Len    int    `json:"len,omitempty"`
	End    bool   `json:"end,omitempty"`
	Exit   *int   `json:"exit,omitempty"`
	Total  int64  `json:"total,omitempty"`
	Error  string `json:"error,omitempty"`
	Hint   string `json:"hint,omitempty"`
}

// readFrame reads a frame's head line. A read error is returned as it is
// (io.EOF for a connection that ended between frames); a line cut short
// is ErrFrameCut, a line that is not a frame head ErrFrameBad.
func readFrame(r *bufio.Reader) (adminFrame, error) {
	var f adminFrame
	line, err := readAdminLine(r)
	if err != nil {
		return f, err
	}
	if !strings.HasSuffix(string(line), "\n") {
		return f, ErrFrameCut
	}
	if err := json.Unmarshal(line, &f); err != nil {
		return f, fmt.Errorf("%w: %v", ErrFrameBad, err)
	}
	return f, nil
}

// frameWriter writes frames on one connection, in the order they happen.
// Its first write error is kept and returned by every later write.
type frameWriter struct {
	w     *bufio.Writer
	err   error
	total int64 // payload bytes written
}

func newFrameWriter(w io.Writer) *frameWriter {
	return &frameWriter{w: bufio.NewWriterSize(w, adminFrameMax+256)}
}

// write sends p as frames of stream ("" in an upload), split at
// adminFrameMax. It returns how much of p went out.
func (fw *frameWriter) write(stream string, p []byte) (int, error) {
	for done := 0; done < len(p); {
		chunk := p[done:min(len(p), done+adminFrameMax)]
		if err := fw.line(adminFrame{Stream: stream, Len: len(chunk)}); err != nil {
			return done, err
		}
		if _, err := fw.w.Write(chunk); err != nil {
			fw.err = err
			return done, err
		}
		done += len(chunk)
		fw.total += int64(len(chunk))
	}
	return len(p), nil
}

// line writes one frame head.
func (fw *frameWriter) line(f adminFrame) error {
	if fw.err != nil {
		return fw.err
	}
	b, _ := json.Marshal(f)
	if _, err := fw.w.Write(append(b, '\n')); err != nil {
		fw.err = err
	}
	return fw.err
}

// end writes the last line and flushes.
func (fw *frameWriter) end(f adminFrame) error {
	f.End = true
	if err := fw.line(f); err != nil {
		return err
	}
	return fw.flush()
}

func (fw *frameWriter) flush() error {
	if fw.err == nil {
		fw.err = fw.w.Flush()
	}
	return fw.err
}

// stream is an io.Writer whose writes go out as frames of stream name.
func (fw *frameWriter) stream(name string) io.Writer { return frameStream{fw, name} }

type frameStream struct {
	fw   *frameWriter
	name string
}

func (s frameStream) Write(p []byte) (int, error) { return s.fw.write(s.name, p) }

// sendUpload writes in to w as an import's upload. The end line goes out
// only after in's io.EOF: on a read error the upload stays cut off, so
// the server imports nothing, and the error is the caller's to report.
func sendUpload(w io.Writer, in io.Reader) (readErr, writeErr error) {
	fw := newFrameWriter(w)
	buf := make([]byte, adminFrameMax)
	for {
		n, err := in.Read(buf)
		if _, werr := fw.write("", buf[:n]); werr != nil {
			return nil, werr
		}
		switch {
		case errors.Is(err, io.EOF):
			return nil, fw.end(adminFrame{Total: fw.total})
		case err != nil:
			return err, fw.flush()
		}
	}
}

// uploadReader reads an import's upload off the connection: the frames'
// bytes, then io.EOF at the end line, and only there; a connection that
// ends first is ErrUploadCut, so a dead client's half file is never taken
// for the whole of it.
type uploadReader struct {
	r     *bufio.Reader
	left  int // bytes left in the current frame
	total int64
	err   error
}

func (u *uploadReader) Read(p []byte) (int, error) {
	for u.left == 0 {
		if u.err != nil {
			return 0, u.err
		}
		u.err = u.next()
	}
	n, err := u.r.Read(p[:min(len(p), u.left)])
	u.left -= n
	u.total += int64(n)
	if n == 0 && err != nil {
		u.err = fmt.Errorf("%w (%d bytes arrived)", ErrUploadCut, u.total)
		u.left = 0
		return 0, u.err
	}
	return n, nil
}

// next reads a frame's head line: a frame's length, or the end.
func (u *uploadReader) next() error {
	f, err := readFrame(u.r)
	switch {
	case errors.Is(err, ErrFrameBad):
		return fmt.Errorf("%w after %d bytes", ErrUploadBad, u.total)
	case err != nil:
		return fmt.Errorf("%w (%d bytes arrived)", ErrUploadCut, u.total)
	case f.End && f.Total != u.total:
		return fmt.Errorf("%w: %d bytes arrived, and the client sent %d", ErrUploadBad, u.total, f.Total)
	case f.End:
		return io.EOF
	case f.Len <= 0 || f.Len > adminFrameMax:
		return fmt.Errorf("%w: a frame of %d bytes", ErrUploadBad, f.Len)
	}
	u.left = f.Len
	return nil
}

// deadlineConn refreshes the deadline before each read and write, so a
// long transfer that keeps moving is not cut, and a stuck peer is.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (d deadlineConn) Read(p []byte) (int, error) {
	d.SetReadDeadline(time.Now().Add(d.timeout))
	return d.Conn.Read(p)
}

func (d deadlineConn) Write(p []byte) (int, error) {
	d.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.Conn.Write(p)
}
