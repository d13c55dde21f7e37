package main

// saslprep.go prepares a password for SCRAM the way PostgreSQL does
// (src/common/saslprep.c, pg_saslprep, and its callers), so that a
// verifier exported from PostgreSQL logs in here whatever the password.
// RFC 5802 asks for SASLprep (RFC 4013) but leaves what to do with a
// password SASLprep refuses to the implementation; PostgreSQL then hashes
// the password's bytes as they are, on both sides (CREATE ROLE … PASSWORD
// and libpq), and so do we.

import (
	"unicode/utf8"

	"github.com/xdg-go/stringprep"
	"golang.org/x/text/unicode/norm"
)

// prohibitedOutput is SASLprep's prohibited output (RFC 4013 §2.3) and
// the unassigned code points of Unicode 3.2 (RFC 3454 A.1), as
// pg_saslprep checks them.
var prohibitedOutput = []stringprep.Set{
	stringprep.TableC1_2, stringprep.TableC2_1, stringprep.TableC2_2, stringprep.TableC3,
	stringprep.TableC4, stringprep.TableC5, stringprep.TableC6, stringprep.TableC7,
	stringprep.TableC8, stringprep.TableC9, stringprep.TableA1,
}

// preparePassword is what PostgreSQL hashes for password: pg_saslprep's
// result when it succeeds, else the password's bytes unchanged. Like
// pg_saslprep, and unlike a strict RFC 4013 profile:
//   - pure ASCII is used as it is, control characters (a tab) included;
//   - invalid UTF-8, a prohibited or unassigned code point, a string that
//     maps to nothing, or a bidi violation gives the raw bytes, not an
//     error;
//   - a non-ASCII space (C.1.2, U+200B included) maps to a space before
//     B.1 can map it to nothing, and the prohibited and bidi checks look
//     at the mapped string before NFKC.
func preparePassword(password string) string {
	if isASCII(password) || !utf8.ValidString(password) {
		return password
	}
	mapped := make([]rune, 0, len(password))
	for _, r := range password {
		if stringprep.TableC1_2.Contains(r) {
			mapped = append(mapped, ' ')
		} else if _, nothing := stringprep.TableB1.Map(r); !nothing {
			mapped = append(mapped, r)
		}
	}
	if len(mapped) == 0 || !saslprepAllows(mapped) {
		return password
	}
	return norm.NFKC.String(string(mapped))
}

// saslprepAllows is pg_saslprep's steps 3 and 4 on the mapped runes: no
// prohibited code point and, if any right-to-left character, none
// left-to-right and one at each end (RFC 3454 §6).
func saslprepAllows(rs []rune) bool {
	rtl := false
	for _, r := range rs {
		for _, s := range prohibitedOutput {
			if s.Contains(r) {
				return false
			}
		}
		rtl = rtl || stringprep.TableD1.Contains(r)
	}
	if !rtl {
		return true
	}
	for _, r := range rs {
		if stringprep.TableD2.Contains(r) {
			return false
		}
	}
	return stringprep.TableD1.Contains(rs[0]) && stringprep.TableD1.Contains(rs[len(rs)-1])
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
