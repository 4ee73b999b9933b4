// Package envsubst expands shell-style variables in a string from a fixed
// set of names, and reports an unknown variable or a malformed expression as
// an error instead of silently writing an empty string.
//
// The grammar is the subset of POSIX parameter expansion that KMM's image
// templates use:
//
//	$NAME            the value of NAME
//	${NAME}          the value of NAME
//	${NAME:-word}    word if NAME is unknown or empty, else its value
//	${NAME-word}     word if NAME is unknown, else its value
//	${NAME:=word}    like :-
//	${NAME=word}     like -
//	${NAME:+word}    word if NAME is known and not empty, else ""
//	${NAME+word}     word if NAME is known, else ""
//	$$               a literal $
//
// A $ that is not followed by a name, "{" or "$" is kept as it is. The word
// of a default may itself hold variables.
package envsubst

import (
	"fmt"
	"strings"
)

// Lookup returns the value of a variable and whether the variable exists.
type Lookup func(name string) (string, bool)

// Error describes why a template could not be expanded.
type Error struct {
	// Template is the whole template.
	Template string
	// Offset is the byte offset in Template where the problem starts.
	Offset int
	// Variable is the variable involved, if any.
	Variable string
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *Error) Error() string {
	if e.Variable != "" {
		return fmt.Sprintf("%s %q at offset %d of %q", e.Reason, e.Variable, e.Offset, e.Template)
	}
	return fmt.Sprintf("%s at offset %d of %q", e.Reason, e.Offset, e.Template)
}

// Expand replaces the variables of s with their values from lookup.
func Expand(s string, lookup Lookup) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s) + 32)
	if err := expand(&b, s, 0, len(s), lookup, s); err != nil {
		return "", err
	}
	return b.String(), nil
}

// Variables returns the names used in s, in order of first use, checking
// the syntax but not whether the names exist.
func Variables(s string) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	_, err := Expand(s, func(name string) (string, bool) {
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
		return "x", true
	})
	return names, err
}

// expand writes the expansion of whole[start:end] to b.
func expand(b *strings.Builder, whole string, start, end int, lookup Lookup, tmpl string) error {
	i := start
	for i < end {
		j := strings.IndexByte(whole[i:end], '$')
		if j < 0 {
			b.WriteString(whole[i:end])
			return nil
		}
		b.WriteString(whole[i : i+j])
		i += j
		if i+1 >= end {
			b.WriteByte('$')
			return nil
		}
		switch c := whole[i+1]; {
		case c == '$':
			b.WriteByte('$')
			i += 2
		case c == '{':
			next, err := expandBraced(b, whole, i, end, lookup, tmpl)
			if err != nil {
				return err
			}
			i = next
		case isNameStart(c):
			k := i + 2
			for k < end && isNameChar(whole[k]) {
				k++
			}
			name := whole[i+1 : k]
			v, ok := lookup(name)
			if !ok {
				return &Error{Template: tmpl, Offset: i, Variable: name, Reason: "unknown variable"}
			}
			b.WriteString(v)
			i = k
		default:
			b.WriteByte('$')
			i++
		}
	}
	return nil
}

// expandBraced expands the ${...} expression that starts at whole[at] and
// returns the offset just after its closing brace.
func expandBraced(b *strings.Builder, whole string, at, end int, lookup Lookup, tmpl string) (int, error) {
	closing := matchingBrace(whole, at+2, end)
	if closing < 0 {
		return 0, &Error{Template: tmpl, Offset: at, Reason: "unterminated ${"}
	}
	k := at + 2
	for k < closing && isNameChar(whole[k]) {
		k++
	}
	name := whole[at+2 : k]
	if name == "" {
		return 0, &Error{Template: tmpl, Offset: at, Reason: "missing variable name in ${}"}
	}
	if !isNameStart(name[0]) {
		return 0, &Error{Template: tmpl, Offset: at, Variable: name, Reason: "invalid variable name"}
	}
	v, ok := lookup(name)
	if k == closing {
		if !ok {
			return 0, &Error{Template: tmpl, Offset: at, Variable: name, Reason: "unknown variable"}
		}
		b.WriteString(v)
		return closing + 1, nil
	}
	op, wordStart := whole[k:k+1], k+1
	if whole[k] == ':' && k+1 < closing {
		op, wordStart = whole[k:k+2], k+2
	}
	useWord := false
	switch op {
	case ":-", ":=":
		useWord = !ok || v == ""
	case "-", "=":
		useWord = !ok
	case ":+":
		useWord = ok && v != ""
		v = ""
	case "+":
		useWord = ok
		v = ""
	default:
		return 0, &Error{Template: tmpl, Offset: k, Variable: name, Reason: "unsupported operator " + strconvQuote(whole[k:closing]) + " after variable"}
	}
	if !useWord {
		b.WriteString(v)
		return closing + 1, nil
	}
	if err := expand(b, whole, wordStart, closing, lookup, tmpl); err != nil {
		return 0, err
	}
	return closing + 1, nil
}

// matchingBrace returns the offset of the "}" that closes a "${" whose body
// starts at from, or -1.
func matchingBrace(s string, from, end int) int {
	depth := 1
	for i := from; i < end; i++ {
		switch {
		case s[i] == '$' && i+1 < end && s[i+1] == '{':
			depth++
			i++
		case s[i] == '}':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

func isNameStart(c byte) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func isNameChar(c byte) bool {
	return isNameStart(c) || '0' <= c && c <= '9'
}

func strconvQuote(s string) string {
	return fmt.Sprintf("%q", s)
}
