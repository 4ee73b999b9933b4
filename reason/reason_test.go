package reason

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"regexp"
	"strconv"
	"testing"
)

// conditionReason is metav1.Condition's reason pattern.
var conditionReason = regexp.MustCompile(`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`)

// TestConstants reads every constant of this package from its source and
// checks that it is a valid condition reason, documented, and unique.
func TestConstants(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "reason.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	n := 0
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok {
					t.Errorf("%s: not a string literal", name.Name)
					continue
				}
				v, _ := strconv.Unquote(lit.Value)
				n++
				if !conditionReason.MatchString(v) {
					t.Errorf("%s = %q is not a valid condition reason", name.Name, v)
				}
				if vs.Doc == nil || len(vs.Doc.List) == 0 {
					t.Errorf("%s has no doc comment", name.Name)
				}
				if other, dup := seen[v]; dup {
					t.Errorf("%s and %s are both %q", name.Name, other, v)
				}
				seen[v] = name.Name
			}
		}
	}
	if n < 30 {
		t.Fatalf("found only %d constants", n)
	}
}

type carrier struct{ r Reason }

func (c carrier) Error() string    { return "failed: " + string(c.r) }
func (c carrier) ReasonOf() Reason { return c.r }

func TestOf(t *testing.T) {
	wrapped := fmt.Errorf("context: %w", carrier{Unauthorized})
	if got := Of(wrapped); got != Unauthorized {
		t.Fatalf("Of(wrapped) = %q, want %q", got, Unauthorized)
	}
	if got := Of(errors.Join(errors.New("x"), carrier{TLSError})); got != TLSError {
		t.Fatalf("Of(joined) = %q, want %q", got, TLSError)
	}
	if got := Of(errors.New("plain")); got != "" {
		t.Fatalf("Of(plain) = %q, want empty", got)
	}
	if got := Of(nil); got != "" {
		t.Fatalf("Of(nil) = %q", got)
	}
}

func TestTagged(t *testing.T) {
	line := Tagged("kmm worker unload: unload a: in use by b [sic]", ModuleInUse)
	if line != "kmm worker unload: unload a: in use by b [sic] [ModuleInUse]" {
		t.Fatalf("Tagged = %q", line)
	}
	msg, r := Untagged(line)
	if msg != "kmm worker unload: unload a: in use by b [sic]" || r != ModuleInUse {
		t.Errorf("Untagged(%q) = %q, %q", line, msg, r)
	}
	for _, plain := range []string{"no tag", "a [lowercase]", "a [Two Words]", "a [Open", "a []", "[ModuleInUse]"} {
		if msg, r := Untagged(plain); msg != plain || r != "" {
			t.Errorf("Untagged(%q) = %q, %q; want it whole, no reason", plain, msg, r)
		}
	}
	if Tagged("m", "") != "m" {
		t.Errorf("Tagged without a reason changed the message")
	}
}
