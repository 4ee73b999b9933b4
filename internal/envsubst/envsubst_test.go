package envsubst

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func lookupFrom(vars map[string]string) Lookup {
	return func(n string) (string, bool) {
		v, ok := vars[n]
		return v, ok
	}
}

var testVars = map[string]string{"A": "alpha", "B": "", "KERNEL_FULL_VERSION": "6.1.0-56-amd64", "_X1": "x"}

func TestExpand(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"no variables", "quay.io/org/mod:v1", "quay.io/org/mod:v1"},
		{"braced", "img:${KERNEL_FULL_VERSION}", "img:6.1.0-56-amd64"},
		{"bare", "img:$KERNEL_FULL_VERSION", "img:6.1.0-56-amd64"},
		{"bare stops at non-name char", "$A-$A.$A/$A:$A", "alpha-alpha.alpha/alpha:alpha"},
		{"underscore and digits", "${_X1}$_X1", "xx"},
		{"empty value", "[${B}]", "[]"},
		{"dollar escape", "$$A", "$A"},
		{"lone dollar at end", "a$", "a$"},
		{"dollar before non-name", "a$-b$/c$.", "a$-b$/c$."},
		{"dollar before digit", "$1", "$1"},
		{"default unknown", "${NOPE:-dflt}", "dflt"},
		{"default empty with colon", "${B:-dflt}", "dflt"},
		{"default empty without colon", "[${B-dflt}]", "[]"},
		{"default known", "${A:-dflt}", "alpha"},
		{"assign form", "${NOPE:=d}${NOPE=e}", "de"},
		{"nested default", "${NOPE:-${A}-x}", "alpha-x"},
		{"alternative known", "${A:+alt}", "alt"},
		{"alternative empty", "[${B:+alt}]", "[]"},
		{"alternative empty no colon", "${B+alt}", "alt"},
		{"alternative unknown", "[${NOPE+alt}]", "[]"},
		{"empty default", "[${NOPE:-}]", "[]"},
		{"adjacent", "${A}${A}", "alphaalpha"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Expand(tc.in, lookupFrom(testVars))
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestExpandErrors(t *testing.T) {
	tests := []struct {
		name, in      string
		wantVar       string
		wantReason    string
		wantOffset    int
		wantInMessage string
	}{
		{"unknown braced", "img:${KERNEL_FOO}", "KERNEL_FOO", "unknown variable", 4, `unknown variable "KERNEL_FOO" at offset 4`},
		{"unknown bare", "img:$MOD_NAMEX", "MOD_NAMEX", "unknown variable", 4, `"MOD_NAMEX"`},
		{"unknown inside default", "${NOPE:-$ALSO_NOPE}", "ALSO_NOPE", "unknown variable", 8, "ALSO_NOPE"},
		{"unterminated", "img:${KERNEL_FULL_VERSION", "", "unterminated ${", 4, "unterminated ${ at offset 4"},
		{"unterminated nested", "${A:-${B}", "", "unterminated ${", 0, "unterminated"},
		{"empty name", "img:${}", "", "missing variable name in ${}", 4, "missing variable name"},
		{"digit name", "${1A}", "1A", "invalid variable name", 0, "invalid variable name"},
		{"unsupported operator", "${A^^}", "A", "unsupported operator \"^^\" after variable", 3, "unsupported operator"},
		{"substring operator", "${A:1:2}", "A", "unsupported operator \":1:2\" after variable", 3, "unsupported"},
		{"space in name", "${A B}", "A", "unsupported operator \" B\" after variable", 3, "unsupported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Expand(tc.in, lookupFrom(testVars))
			require.Error(t, err)
			var e *Error
			require.True(t, errors.As(err, &e), "want *Error, got %T", err)
			assert.Equal(t, tc.wantVar, e.Variable)
			assert.Equal(t, tc.wantReason, e.Reason)
			assert.Equal(t, tc.wantOffset, e.Offset)
			assert.Equal(t, tc.in, e.Template)
			assert.Contains(t, err.Error(), tc.wantInMessage)
		})
	}
}

func TestVariables(t *testing.T) {
	names, err := Variables("${A}/$B:${A}-${C:-$D}")
	require.NoError(t, err)
	assert.Equal(t, []string{"A", "B", "C"}, names, "D is not used because C is always found")

	_, err = Variables("${A")
	require.Error(t, err)
}

func FuzzExpand(f *testing.F) {
	for _, s := range []string{"", "$", "$$", "${", "${}", "${A}", "${A:-${B:-${C}}}", "$A$B", "${A:+x}", "}${", "${A-}}", "${${A}}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := Expand(s, lookupFrom(testVars))
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			if e.Offset < 0 || e.Offset > len(s) {
				t.Fatalf("offset %d outside template of length %d", e.Offset, len(s))
			}
			return
		}
		if !strings.Contains(s, "$") && out != s {
			t.Fatalf("template without $ changed: %q -> %q", s, out)
		}
		if utf8.ValidString(s) && !utf8.ValidString(out) {
			t.Fatalf("valid UTF-8 %q expanded to invalid %q", s, out)
		}
	})
}
