package main

// adminlist.go is what the admin commands show of accounts: users list
// and users show, as a table or JSON, never a salt or a key.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

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

// listAccounts streams the account list: a server with a million accounts
// must not build the whole listing in memory for one admin request. The
// text table takes its column widths from a first pass over the db, so its
// rows can be written as they are read, aligned as tabwriter would.
func listAccounts(store Storage, out io.Writer, asJSON bool) error {
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

func listJSON(store Storage, w io.Writer) error {
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

func listText(store Storage, w io.Writer) error {
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
