package main

// admin.go is account administration: the `authbox users …` and
// `authbox backup` commands, and the local admin socket through which they
// reach a running server. bbolt lets one process hold the db file, so while
// `authbox serve` runs the commands cannot open it; instead they send their
// request over a Unix socket beside the db (db path + ".sock", mode 0600:
// file permissions are the access control, and it is never on TCP). With
// no server they open the db themselves. Either way the same function,
// runAdmin, does the work and writes the output, so the two cannot differ.
//
// The admin protocol, one request per connection:
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
//	        JSON line {"end":true,"exit":C,"error":…,"hint":…}.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

const (
	// adminDialTimeout bounds connecting to the admin socket. It is local:
	// a live server answers at once, so a longer wait means none is there.
	adminDialTimeout = 2 * time.Second
	// adminIOTimeout bounds each read of a request and each write of a
	// frame on the server side, so a stuck admin client cannot hold a
	// goroutine and a read transaction for ever.
	adminIOTimeout = 30 * time.Second
	// adminIdleTimeout bounds the client's wait for the next frame: an
	// import or a backup of a big db does seconds to minutes of work
	// before it answers; this only catches a server that hung.
	adminIdleTimeout = 10 * time.Minute
	// maxAdminRequest bounds the JSON request line (not an import's data).
	maxAdminRequest = 64 << 10
	// adminFrameMax is the largest frame written; bigger writes are split.
	adminFrameMax = 64 << 10
	// progressMinBytes is the smallest import file that gets a progress
	// bar: below it the import ends before a bar would be worth drawing.
	progressMinBytes = 1 << 20
)

var (
	// ErrUploadCut is returned when an import's upload ends before its end
	// line: the client stopped before the end of its input.
	ErrUploadCut = errors.New("the upload was cut off before the end of the file")
	// ErrUploadBad is returned when an import's upload is not made of
	// frames as admin.go describes, or its total is not what arrived.
	ErrUploadBad = errors.New("the upload is malformed")
)

// Admin operations.
const (
	opList   = "list"
	opShow   = "show"
	opDelete = "delete"
	opLock   = "lock"
	opUnlock = "unlock"
	opImport = "import"
	opExport = "export"
	opBackup = "backup"
)

// adminRequest is one admin command, as sent over the socket.
type adminRequest struct {
	Op      string `json:"op"`
	Name    string `json:"name,omitempty"`
	JSON    bool   `json:"json,omitempty"`
	Format  string `json:"format,omitempty"`
	File    string `json:"file,omitempty"` // as the user wrote it, for messages
	Replace bool   `json:"replace,omitempty"`
	Partial bool   `json:"partial,omitempty"`
	// Iterations is the admin's config's iterations, which an import
	// compares the imported accounts' with.
	Iterations int `json:"iterations,omitempty"`
}

// adminOut is where an admin command writes: the user's standard output
// and error, and the output file of a backup or an export.
type adminOut struct {
	Stdout, Stderr, File io.Writer
}

// AdminSocketPath is the admin socket of a db file.
func AdminSocketPath(db string) string { return db + ".sock" }

// AccountInfo is what `users list` and `users show` tell of an account:
// never a salt or a key.
type AccountInfo struct {
	Name       string    `json:"name"`
	Kind       string    `json:"kind"`
	Iterations int       `json:"iterations"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
	Locked     bool      `json:"locked"`
}

func accountInfo(name string, rec Record) AccountInfo {
	return AccountInfo{Name: name, Kind: rec.Kind.String(), Iterations: rec.Iterations,
		Created: rec.Created, Updated: rec.Updated, Locked: rec.Locked}
}

// runAdmin does one admin command against the store that open returns: the
// server's, or the db file opened only once it is needed, so that an
// import reads its whole input first. in is an import's input. Every
// failure is a *cliError, so that it reaches the user the same way from
// the socket as from a local run.
func runAdmin(open func() (*Store, error), req adminRequest, in io.Reader, out adminOut) error {
	err := adminOp(open, req, in, out)
	var ce *cliError
	if err != nil && !errors.As(err, &ce) {
		return fail(exitOther, "", "%s", err)
	}
	return err
}

func adminOp(open func() (*Store, error), req adminRequest, in io.Reader, out adminOut) error {
	var name string
	switch req.Op {
	case opShow, opDelete, opLock, opUnlock:
		n, err := NormalizeUsername(req.Name)
		if err != nil {
			return fail(exitRefused, "a username is 1 to 64 bytes of letters, digits and punctuation, without spaces", "invalid username %q", req.Name)
		}
		name = n
	}
	notFound := func() error {
		return fail(exitRefused, `"authbox users list" shows the accounts; names are case-sensitive`, "no account named %q", name)
	}
	if req.Op == opImport {
		return adminImport(open, req, in, out)
	}
	store, err := open()
	if err != nil {
		return err
	}
	switch req.Op {
	case opList:
		return listAccounts(store, out.Stdout, req.JSON)
	case opShow:
		rec, err := store.Get(name)
		if errors.Is(err, ErrNotFound) {
			return notFound()
		}
		if err != nil {
			return err
		}
		return writeAccount(out.Stdout, accountInfo(name, rec), req.JSON)
	case opDelete:
		err := store.Delete(name)
		if errors.Is(err, ErrNotFound) {
			return notFound()
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out.Stdout, "deleted account %q\n", name)
		return nil
	case opLock, opUnlock:
		lock := req.Op == opLock
		changed, err := store.SetLocked(name, lock)
		if errors.Is(err, ErrNotFound) {
			return notFound()
		}
		if err != nil {
			return err
		}
		switch {
		case changed:
			fmt.Fprintf(out.Stdout, "%sed account %q\n", req.Op, name)
		default:
			fmt.Fprintf(out.Stdout, "account %q was already %sed\n", name, req.Op)
		}
		return nil
	case opExport:
		return adminExport(store, req, out)
	case opBackup:
		n, err := store.Backup(out.File)
		if err != nil {
			return fmt.Errorf("writing the backup: %w", err)
		}
		fmt.Fprintf(out.Stdout, "wrote a backup of %d bytes to %s; \"authbox serve --db %s\" serves it\n", n, req.File, req.File)
		return nil
	}
	return fail(exitOther, "", "unknown admin operation %q", req.Op)
}

// listAccounts streams the account list: a server with a million accounts
// must not build the whole listing in memory for one admin request. The
// text table takes its column widths from a first pass over the db, so its
// rows can be written as they are read, aligned as tabwriter would.
func listAccounts(store *Store, out io.Writer, asJSON bool) error {
	w := bufio.NewWriterSize(out, 64<<10)
	var err error
	if asJSON {
		err = listJSON(store, w)
	} else {
		err = listText(store, w)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return err
}

func listJSON(store *Store, w io.Writer) error {
	n := 0
	err := store.Each(func(name string, rec Record) error {
		b, err := json.MarshalIndent(accountInfo(name, rec), "  ", "  ")
		if err != nil {
			return err
		}
		sep := ",\n  "
		if n == 0 {
			sep = "[\n  "
		}
		n++
		if _, err := io.WriteString(w, sep); err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	})
	if err != nil {
		return err
	}
	if n == 0 {
		_, err = io.WriteString(w, "[]\n")
	} else {
		_, err = io.WriteString(w, "\n]\n")
	}
	return err
}

func accountRow(a AccountInfo) []string {
	return []string{a.Name, a.Kind, iterationsText(a.Iterations), timeText(a.Created), timeText(a.Updated), yesNo(a.Locked)}
}

func listText(store *Store, w io.Writer) error {
	header := []string{"NAME", "KIND", "ITERATIONS", "CREATED", "UPDATED", "LOCKED"}
	widths := make([]int, len(header))
	grow := func(row []string) {
		for i, c := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	grow(header)
	n := 0
	if err := store.Each(func(name string, rec Record) error {
		grow(accountRow(accountInfo(name, rec)))
		n++
		return nil
	}); err != nil {
		return err
	}
	if n == 0 {
		_, err := fmt.Fprintln(w, "no accounts")
		return err
	}
	writeRow := func(row []string) error {
		var b strings.Builder
		for i, c := range row {
			b.WriteString(c)
			if i < len(row)-1 {
				b.WriteString(strings.Repeat(" ", max(1, widths[i]-utf8.RuneCountInString(c)+2)))
			}
		}
		b.WriteByte('\n')
		_, err := io.WriteString(w, b.String())
		return err
	}
	if err := writeRow(header); err != nil {
		return err
	}
	// Accounts added between the two passes are listed if they fit the
	// widths; a wider name just breaks its row's alignment.
	return store.Each(func(name string, rec Record) error {
		return writeRow(accountRow(accountInfo(name, rec)))
	})
}

func writeAccount(w io.Writer, a AccountInfo, asJSON bool) error {
	if asJSON {
		return writeJSON(w, a)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "name\t%s\nkind\t%s\niterations\t%s\ncreated\t%s\nupdated\t%s\nlocked\t%s\n", a.Name, a.Kind,
		iterationsText(a.Iterations), timeText(a.Created), timeText(a.Updated), yesNo(a.Locked))
	return tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func iterationsText(n int) string {
	if n == 0 {
		return "-" // a legacy record: one SHA-256, no PBKDF2
	}
	return fmt.Sprint(n)
}

func timeText(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// adminImport parses the whole input first, so that a bad line stops the
// import before anything is written (or a db created), then writes every
// account in one transaction.
func adminImport(open func() (*Store, error), req adminRequest, in io.Reader, out adminOut) error {
	res, err := ParseImport(req.Format, in)
	if err != nil {
		return inputError(req.File, err)
	}
	for _, r := range res.Rejected {
		fmt.Fprintf(out.Stderr, "%s:%d: %s\n", req.File, r.Line, r.Reason)
	}
	counts := func(created, skipped int) {
		fmt.Fprintf(out.Stdout, "imported %d, skipped %d (name exists), rejected %d\n", created, skipped, len(res.Rejected))
	}
	if len(res.Rejected) > 0 && !req.Partial {
		counts(0, 0)
		return fail(exitOther, "fix the lines above and import again, or import the other lines with --partial",
			"nothing imported: %d of %d lines rejected", len(res.Rejected), res.Lines)
	}
	var created, skipped int
	if len(res.Accounts) > 0 {
		store, err := open()
		if err != nil {
			return err
		}
		// In key order bbolt fills its pages; in file order it leaves
		// them half empty.
		slices.SortFunc(res.Accounts, func(a, b NamedRecord) int { return strings.Compare(a.Name, b.Name) })
		created, skipped, err = store.CreateMany(res.Accounts, req.Replace)
		if err != nil {
			return fmt.Errorf("nothing imported: %w", err)
		}
	}
	counts(created, skipped)
	if odd := oddIterations(res.Accounts, req.Iterations); created > 0 && odd > 0 {
		fmt.Fprintf(out.Stderr, "authbox: note: %d %s in the file %s an iteration count other than the config's iterations (%d), which tells %s from unknown names; see \"Iteration count as a tell\" in README.md\n",
			odd, plural(odd, "account", "accounts"), plural(odd, "has", "have"), req.Iterations, plural(odd, "it", "them"))
	}
	if skipped > 0 && !req.Replace {
		fmt.Fprintf(out.Stderr, "authbox: hint: existing accounts were left as they are; --replace overwrites them\n")
	}
	if created > 0 && req.Format == FormatSeedCSV {
		fmt.Fprintf(out.Stderr, "authbox: hint: legacy accounts can log in only while the server's mechanisms include %q (auth.toml); each is upgraded to SCRAM at its first login\n", MechSeed)
	}
	return nil
}

// oddIterations counts the SCRAM accounts whose iteration count is not
// the config's: an unknown name is shown the config's, so they stand out.
func oddIterations(accounts []NamedRecord, configured int) int {
	if configured == 0 {
		return 0 // a request from a client that did not say
	}
	n := 0
	for _, a := range accounts {
		if a.Record.Kind == KindSCRAM && a.Record.Iterations != configured {
			n++
		}
	}
	return n
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// adminExport writes every SCRAM account as a PostgreSQL verifier line.
// Legacy accounts have no verifier to write: they get one at their first
// login, so they are counted and left out.
func adminExport(store *Store, req adminRequest, out adminOut) error {
	if req.Format != FormatPG {
		return fail(exitOther, "export writes --format pg", "cannot export in format %q", req.Format)
	}
	w := bufio.NewWriter(out.File)
	var n, legacy int
	err := store.Each(func(name string, rec Record) error {
		if rec.Kind != KindSCRAM {
			legacy++
			return nil
		}
		n++
		_, err := w.WriteString(FormatPGLine(name, rec))
		return err
	})
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", req.File, err)
	}
	fmt.Fprintf(out.Stdout, "exported %d %s to %s\n", n, plural(n, "account", "accounts"), req.File)
	if legacy > 0 {
		fmt.Fprintf(out.Stdout, "left out %d legacy %s\n", legacy,
			plural(legacy, "account: it has no SCRAM verifier until its first login", "accounts: they have no SCRAM verifier until their first login"))
	}
	return nil
}

// AdminServer answers admin commands on the socket beside the db while
// `authbox serve` holds the db.
type AdminServer struct {
	store *Store
	log   *slog.Logger
	path  string
	ln    net.Listener
	wg    sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// ListenAdmin creates the admin socket beside the store's db file, mode
// 0600, and serves it until Shutdown. A socket file left by a server that
// died is replaced: the caller holds the db, so no live server owns it.
func ListenAdmin(store *Store, log *slog.Logger) (*AdminServer, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	path := AdminSocketPath(store.Path())
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, adminDialTimeout)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another process answers on %s", path)
		}
		// Only a refused connection says nobody listens: a socket of
		// another kind, or one we may not open, may still be in use.
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%s exists and cannot be checked (%s): remove it if no server uses it", path, errText(err))
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the stale %s: %w", path, err)
		}
		log.Info("removed a stale admin socket", "path", path)
	}
	if max := len(syscall.RawSockaddrUnix{}.Path) - 1; len(path) > max {
		return nil, fmt.Errorf("cannot create the admin socket %s: the path is %d bytes, and a Unix socket's may have %d", path, len(path), max)
	}
	// The umask makes the socket 0600 from its first moment: a chmod
	// after bind would leave a window. Serve runs this before it starts
	// any other goroutine that creates files.
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("cannot create the admin socket %s: %s", path, errText(err))
	}
	a := &AdminServer{store: store, log: log, path: path, ln: ln, conns: map[net.Conn]struct{}{}}
	a.wg.Add(1)
	go a.serve()
	log.Info("admin socket", "path", path)
	return a, nil
}

// Path is the socket's path.
func (a *AdminServer) Path() string { return a.path }

func (a *AdminServer) serve() {
	defer a.wg.Done()
	for {
		c, err := a.ln.Accept()
		if err != nil {
			return // closed by Shutdown; a Unix listener has no other failure worth a retry
		}
		a.mu.Lock()
		a.conns[c] = struct{}{}
		a.wg.Add(1)
		a.mu.Unlock()
		go func() {
			defer a.wg.Done()
			a.handle(c)
			a.mu.Lock()
			delete(a.conns, c)
			a.mu.Unlock()
			c.Close()
		}()
	}
}

// Shutdown stops accepting, removes the socket file, and waits for the
// commands under way until done is closed; then it cuts them.
func (a *AdminServer) Shutdown(done <-chan struct{}) {
	a.ln.Close() // a listening Unix socket made by Listen unlinks its file
	finished := make(chan struct{})
	go func() { a.wg.Wait(); close(finished) }()
	select {
	case <-finished:
		return
	case <-done:
	}
	a.mu.Lock()
	for c := range a.conns {
		c.Close()
	}
	a.mu.Unlock()
	<-finished
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

func (a *AdminServer) handle(nc net.Conn) {
	// A bug in one admin command must not take the logins down with it.
	defer func() {
		if r := recover(); r != nil {
			a.log.Error("panic in an admin command", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	c := deadlineConn{nc, adminIOTimeout}
	r := bufio.NewReaderSize(c, 4096)
	line, err := readAdminLine(r)
	if err != nil {
		if !errors.Is(err, io.EOF) { // a bare connect is a liveness probe
			a.log.Warn("admin request unreadable", "err", err)
		}
		return
	}
	var req adminRequest
	if err := json.Unmarshal(line, &req); err != nil {
		a.log.Warn("admin request unreadable", "err", err)
		return
	}
	who := []any{"op", req.Op}
	if req.Name != "" {
		who = append(who, "user", req.Name)
	}
	a.log.Info("admin", who...)
	w := bufio.NewWriterSize(c, adminFrameMax+256)
	fw := &frameWriter{w: w}
	var in io.Reader
	if req.Op == opImport {
		in = &uploadReader{r: r}
	}
	err = runAdmin(func() (*Store, error) { return a.store, nil }, req, in, adminOut{Stdout: fw.stream("stdout"), Stderr: fw.stream("stderr"), File: fw.stream("file")})
	end := adminEnd{End: true}
	var ce *cliError
	if errors.As(err, &ce) {
		end.Exit, end.Error, end.Hint = ce.code, ce.msg, ce.hint
		a.log.Info("admin failed", append(who, "err", ce.msg)...)
	}
	if fw.err == nil {
		b, _ := json.Marshal(end)
		w.Write(append(b, '\n'))
		w.Flush()
	}
}

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

// inputError is how an import reports that its input cannot be read, the
// same from the socket as on the file.
func inputError(file string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fail(exitOther, "", "reading %s: %s", file, errText(err))
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

// adminClient runs an admin command the way the situation allows: through
// the running server's admin socket, or else on the db file itself.
type adminClient struct {
	db         string
	iterations int // the config's
	out        adminOut
}

func newAdminClient(ctx *cli.Context) (*adminClient, error) {
	cfg, err := loadConfig(ctx)
	if err != nil {
		return nil, err
	}
	db := ctx.String("db")
	if db == "" {
		db = cfg.DB
	}
	return &adminClient{db: db, iterations: cfg.Iterations, out: adminOut{Stdout: ctx.App.Writer, Stderr: ctx.App.ErrWriter}}, nil
}

// run sends req to the server if one answers on the socket, else opens
// the db. in is an import's input; mayCreate lets an import start a new db.
func (ac *adminClient) run(req adminRequest, in io.Reader, mayCreate bool) error {
	sock := AdminSocketPath(ac.db)
	nc, err := net.DialTimeout("unix", sock, adminDialTimeout)
	if err == nil {
		defer nc.Close()
		if err := checkAdminPeer(nc.(*net.UnixConn), sock); err != nil {
			return err
		}
		return ac.remote(nc.(*net.UnixConn), req, in)
	}
	var store *Store
	open := func() (*Store, error) {
		if store != nil {
			return store, nil
		}
		// bbolt makes a db of any empty file it opens: only a command that
		// may create the db may do that.
		fi, err := os.Stat(ac.db)
		switch {
		case errors.Is(err, os.ErrNotExist) && !mayCreate:
			return nil, fail(exitOther, "give the db with --db, or the config that names it with --config", "no database at %s", ac.db)
		case err == nil && fi.Mode().IsRegular() && fi.Size() == 0 && !mayCreate:
			return nil, fail(exitOther, "give the db with --db, or the config that names it with --config; an import creates a new db",
				"%s is an empty file, not an authbox database", ac.db)
		}
		s, err := OpenStore(ac.db)
		if errors.Is(err, ErrDBLocked) {
			return nil, fail(exitOther, "a server that is starting or stopping holds it briefly: try again; otherwise find the process holding it (fuser "+ac.db+") and stop it",
				"database %s is locked by another process, and no authbox server answers on its admin socket %s", ac.db, sock)
		}
		if err != nil {
			return nil, fail(exitOther, "check the path and its permissions", "%s", err)
		}
		store = s
		return s, nil
	}
	err = runAdmin(open, req, in, ac.out)
	if store != nil {
		if cerr := store.Close(); err == nil && cerr != nil {
			return fail(exitOther, "", "closing %s: %s", ac.db, cerr)
		}
	}
	return err
}

// checkAdminPeer refuses an admin socket served by another user than us or
// root: whoever answers sees the command and, for an import, the
// verifiers, and its answers are taken for the server's.
func checkAdminPeer(nc *net.UnixConn, sock string) error {
	raw, err := nc.SyscallConn()
	var cred *syscall.Ucred
	if err == nil {
		cerr := raw.Control(func(fd uintptr) {
			cred, err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
		})
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fail(exitOther, "", "cannot tell who serves the admin socket %s: %s", sock, errText(err))
	}
	return adminPeerAllowed(sock, cred.Uid, os.Geteuid())
}

// adminPeerAllowed is checkAdminPeer's rule: the peer is us, or root.
func adminPeerAllowed(sock string, peer uint32, euid int) error {
	if peer == 0 || int64(peer) == int64(euid) {
		return nil
	}
	return fail(exitOther, "a process of another user listens at the db's socket path: find it (fuser "+sock+") and stop it, then try again",
		"refusing the admin socket %s: it is served by uid %d, not by you (uid %d) or root", sock, peer, euid)
}

// remote sends one request over the admin socket and plays its frames
// back to the user's streams and the output file.
func (ac *adminClient) remote(nc *net.UnixConn, req adminRequest, in io.Reader) error {
	b, _ := json.Marshal(req)
	c := deadlineConn{nc, adminIdleTimeout}
	// The request goes out while the replies come in, so that neither side
	// can block the other with a full socket buffer.
	type upload struct{ readErr, writeErr error }
	sent := make(chan upload, 1)
	go func() {
		var u upload
		_, u.writeErr = c.Write(append(b, '\n'))
		if u.writeErr == nil && in != nil {
			u.readErr, u.writeErr = sendUpload(c, in)
		}
		nc.CloseWrite()
		sent <- u
	}()
	r := bufio.NewReader(c)
	lost := func(err error) error {
		nc.Close() // ends the sender too
		u := <-sent
		if u.readErr != nil {
			return inputError(req.File, u.readErr)
		}
		if u.writeErr != nil && !errors.Is(u.writeErr, net.ErrClosed) {
			err = u.writeErr
		}
		return fail(exitOther, "see the server's log", "the server's admin socket failed mid-command: %s", err)
	}
	for {
		line, err := readAdminLine(r)
		if err != nil {
			return lost(err)
		}
		var f struct {
			adminFrame
			adminEnd
		}
		if err := json.Unmarshal(line, &f); err != nil {
			return lost(err)
		}
		if f.End {
			// The server hangs up after the end, which ends the upload.
			// An input that could not be read is the user's error, whatever
			// the server made of the upload it cut short.
			if u := <-sent; u.readErr != nil {
				return inputError(req.File, u.readErr)
			}
			if f.Exit != exitOK {
				return &cliError{code: f.Exit, msg: f.Error, hint: f.Hint}
			}
			return nil
		}
		var dst io.Writer
		switch f.Stream {
		case "stdout":
			dst = ac.out.Stdout
		case "stderr":
			dst = ac.out.Stderr
		case "file":
			dst = ac.out.File
		}
		if dst == nil || f.Len < 0 {
			return lost(fmt.Errorf("unexpected frame %q", f.Stream))
		}
		if _, err := io.CopyN(dst, r, int64(f.Len)); err != nil {
			return lost(err)
		}
	}
}

// adminCommands are `authbox users …` and `authbox backup`.
func adminCommands(usageErr cli.OnUsageErrorFunc, configFlag cli.Flag) []*cli.Command {
	dbFlag := &cli.StringFlag{Name: "db", Usage: "account database `FILE` (default: db from the config, authbox.db)"}
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"}
	formatFlag := &cli.StringFlag{Name: "format", Usage: "`FORMAT` of the file: seed-csv (the original system's USERS table) or pg (PostgreSQL SCRAM verifiers)"}
	sub := func(name, args, usage string, action cli.ActionFunc, flags ...cli.Flag) *cli.Command {
		return &cli.Command{Name: name, ArgsUsage: args, Usage: usage, OnUsageError: usageErr,
			Flags: append([]cli.Flag{dbFlag, configFlag}, flags...), Action: action}
	}
	nameOp := func(op string) cli.ActionFunc {
		return func(ctx *cli.Context) error {
			name, err := oneArg(ctx, "NAME")
			if err != nil {
				return err
			}
			return adminAction(ctx, adminRequest{Op: op, Name: name, JSON: ctx.Bool("json")}, nil)
		}
	}
	return []*cli.Command{
		{
			Name:            "users",
			HideHelpCommand: true,
			Usage:           "list and manage accounts, import and export them (through the running server, or on the db file)",
			OnUsageError:    usageErr,
			// Runs when no subcommand matches: say so in our words, not
			// the CLI library's "No help topic".
			Action: func(ctx *cli.Context) error {
				hint := `run "authbox users --help" for its commands`
				if ctx.NArg() > 0 {
					return fail(exitOther, hint, "unknown command \"users %s\"", ctx.Args().First())
				}
				return fail(exitOther, hint, "users needs a command: list, show, delete, lock, unlock, import or export")
			},
			Subcommands: []*cli.Command{
				sub("list", "", "list every account", func(ctx *cli.Context) error {
					if err := noCLIArgs(ctx); err != nil {
						return err
					}
					return adminAction(ctx, adminRequest{Op: opList, JSON: ctx.Bool("json")}, nil)
				}, jsonFlag),
				sub("show", "NAME", "show one account", nameOp(opShow), jsonFlag),
				sub("delete", "NAME", "delete an account", nameOp(opDelete)),
				sub("lock", "NAME", "lock an account: a right password then gets ERR LOCKED", nameOp(opLock)),
				sub("unlock", "NAME", "unlock an account", nameOp(opUnlock)),
				sub("import", "FILE", "create accounts from a file (all or nothing)", cmdUsersImport, formatFlag,
					&cli.BoolFlag{Name: "replace", Usage: "overwrite accounts that exist (default: skip them)"},
					&cli.BoolFlag{Name: "partial", Usage: "import the good lines even if some are rejected"}),
				sub("export", "FILE", "write every SCRAM account to a new file as PostgreSQL verifiers", cmdUsersExport,
					&cli.StringFlag{Name: "format", Value: FormatPG, Usage: "`FORMAT` of the file: pg (PostgreSQL SCRAM verifiers), the only one"}),
			},
		},
		sub("backup", "FILE", "write a consistent copy of the db to a new file, while the server keeps serving", cmdBackup),
	}
}

// oneArg returns the single positional argument. urfave/cli stops reading
// flags at the first argument, so a flag after it is called out.
func oneArg(ctx *cli.Context, what string) (string, error) {
	var path []string
	for _, c := range ctx.Lineage() {
		if c.Command != nil && c.Command.Name != "" && c.Command.Name != ctx.App.Name {
			path = append([]string{c.Command.Name}, path...)
		}
	}
	usage := `run "authbox ` + strings.Join(path, " ") + ` --help" for usage`
	switch {
	case ctx.NArg() == 0:
		return "", fail(exitOther, usage, "missing %s", what)
	case ctx.NArg() > 1:
		return "", fail(exitOther, "flags go before "+what+"; "+usage, "unexpected argument %q after %s", ctx.Args().Get(1), what)
	}
	return ctx.Args().First(), nil
}

func adminAction(ctx *cli.Context, req adminRequest, in io.Reader) error {
	ac, err := newAdminClient(ctx)
	if err != nil {
		return err
	}
	return ac.run(req, in, false)
}

func cmdUsersImport(ctx *cli.Context) error {
	path, err := oneArg(ctx, "FILE")
	if err != nil {
		return err
	}
	format := ctx.String("format")
	if format != FormatSeedCSV && format != FormatPG {
		return fail(exitOther, "say what the file holds: --format seed-csv (the original system's USERS table) or --format pg (PostgreSQL verifiers)",
			"missing or unknown --format %q", format)
	}
	ac, err := newAdminClient(ctx)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fail(exitOther, "", "cannot read %s: %s", path, errText(err))
	}
	defer f.Close()
	var in io.Reader = f
	bar := newProgress(ctx.App.ErrWriter)
	if fi, err := f.Stat(); err == nil && fi.Size() >= progressMinBytes {
		in = bar.reading(f, fi.Size(), "reading "+path)
	}
	ac.out.Stdout, ac.out.Stderr = bar.clearing(ac.out.Stdout), bar.clearing(ac.out.Stderr)
	defer bar.stop()
	req := adminRequest{Op: opImport, Format: format, File: path, Replace: ctx.Bool("replace"), Partial: ctx.Bool("partial"), Iterations: ac.iterations}
	return ac.run(req, in, true)
}

func cmdUsersExport(ctx *cli.Context) error {
	if f := ctx.String("format"); f != FormatPG {
		return fail(exitOther, "export writes --format pg", "cannot export in format %q", f)
	}
	return withOutputFile(ctx, adminRequest{Op: opExport, Format: FormatPG})
}

func cmdBackup(ctx *cli.Context) error {
	return withOutputFile(ctx, adminRequest{Op: opBackup})
}

// withOutputFile runs a command that writes a new file: created before
// anything else happens (0600: it holds verifiers), never over an existing
// one, synced, and removed if the command fails.
func withOutputFile(ctx *cli.Context, req adminRequest) error {
	path, err := oneArg(ctx, "FILE")
	if err != nil {
		return err
	}
	ac, err := newAdminClient(ctx)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fail(exitOther, "choose a new file name: it never overwrites a file", "%s exists", path)
	}
	if err != nil {
		return fail(exitOther, "", "cannot create %s: %s", path, errText(err))
	}
	req.File = path
	ac.out.File = f
	err = ac.run(req, nil, false)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		var ce *cliError
		if !errors.As(err, &ce) {
			err = fail(exitOther, "", "writing %s: %s", path, err)
		}
	}
	return err
}

// progress is an import's progress bar, drawn only when standard error is
// a terminal: first the bytes read, then a spinner while the accounts are
// written. Any output clears it first.
type progress struct {
	mu  sync.Mutex
	w   io.Writer
	on  bool
	bar *progressbar.ProgressBar
}

func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, on: ok && term.IsTerminal(int(f.Fd()))}
}

func (p *progress) reading(r io.Reader, size int64, what string) io.Reader {
	if !p.on {
		return r
	}
	p.bar = progressbar.NewOptions64(size, progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(), progressbar.OptionFullWidth())
	return &progressReader{r: r, p: p}
}

type progressReader struct {
	r io.Reader
	p *progress
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.mu.Lock()
	defer pr.p.mu.Unlock()
	if pr.p.bar != nil {
		pr.p.bar.Add(n)
		if errors.Is(err, io.EOF) {
			pr.p.bar.Finish()
			pr.p.bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(pr.p.w),
				progressbar.OptionSetDescription("writing accounts"), progressbar.OptionClearOnFinish(),
				progressbar.OptionSpinnerType(14), progressbar.OptionSetRenderBlankState(true))
		}
	}
	return n, err
}

// stop clears the bar, if one is drawn.
func (p *progress) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Finish()
		p.bar.Clear()
		p.bar = nil
	}
}

type clearingWriter struct {
	p *progress
	w io.Writer
}

func (p *progress) clearing(w io.Writer) io.Writer {
	if !p.on {
		return w
	}
	return &clearingWriter{p: p, w: w}
}

func (c *clearingWriter) Write(b []byte) (int, error) {
	c.p.stop()
	return c.w.Write(b)
}
