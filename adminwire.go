package main

// adminwire.go is the framing of the admin socket (described in admin.go):
// the request line, the upload frames of an import, and the output frames.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// readAdminLine reads the request line, bounded by maxAdminRequest.
func readAdminLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		part, err := r.ReadSlice('\n')
		line = append(line, part...)
		if len(line) > maxAdminRequest {
			return nil, errors.New("admin request line too long")
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

// uploadFrame heads a frame of an import's upload, or ends it.
type uploadFrame struct {
	Len   int   `json:"len,omitempty"`
	End   bool  `json:"end,omitempty"`
	Total int64 `json:"total,omitempty"`
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
	line, err := readAdminLine(u.r)
	if err != nil || !strings.HasSuffix(string(line), "\n") {
		return fmt.Errorf("%w (%d bytes arrived)", ErrUploadCut, u.total)
	}
	var f uploadFrame
	if err := json.Unmarshal(line, &f); err != nil {
		return fmt.Errorf("%w after %d bytes", ErrUploadBad, u.total)
	}
	switch {
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

// sendUpload writes in to w as an import's upload. The end line goes out
// only after in's io.EOF: on a read error the upload stays cut off, so
// the server imports nothing, and the error is the caller's to report.
func sendUpload(w io.Writer, in io.Reader) (readErr, writeErr error) {
	bw := bufio.NewWriterSize(w, adminFrameMax+256)
	buf := make([]byte, adminFrameMax)
	var total int64
	for {
		n, err := in.Read(buf)
		if n > 0 {
			hdr, _ := json.Marshal(uploadFrame{Len: n})
			bw.Write(append(hdr, '\n'))
			if _, werr := bw.Write(buf[:n]); werr != nil {
				return nil, werr
			}
			total += int64(n)
		}
		switch {
		case errors.Is(err, io.EOF):
			end, _ := json.Marshal(uploadFrame{End: true, Total: total})
			bw.Write(append(end, '\n'))
			return nil, bw.Flush()
		case err != nil:
			return err, bw.Flush()
		}
	}
}

// adminFrame heads a frame of output; adminEnd ends the reply.
type adminFrame struct {
	Stream string `json:"stream"`
	Len    int    `json:"len"`
}

type adminEnd struct {
	End   bool   `json:"end"`
	Exit  int    `json:"exit"`
	Error string `json:"error,omitempty"`
	Hint  string `json:"hint,omitempty"`
}

// frameWriter turns the writes of runAdmin's streams into frames on one
// connection, in the order they happen.
type frameWriter struct {
	w   *bufio.Writer
	err error
}

type frameStream struct {
	fw   *frameWriter
	name string
}

func (fw *frameWriter) stream(name string) io.Writer { return &frameStream{fw: fw, name: name} }

func (s *frameStream) Write(p []byte) (int, error) {
	fw := s.fw
	if fw.err != nil {
		return 0, fw.err
	}
	for done := 0; done < len(p); {
		chunk := p[done:min(len(p), done+adminFrameMax)]
		hdr, _ := json.Marshal(adminFrame{Stream: s.name, Len: len(chunk)})
		if _, err := fw.w.Write(append(hdr, '\n')); err != nil {
			fw.err = err
			return done, err
		}
		if _, err := fw.w.Write(chunk); err != nil {
			fw.err = err
			return done, err
		}
		done += len(chunk)
	}
	return len(p), nil
}
