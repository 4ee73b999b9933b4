package kmm_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// reasonConstants reads the constants of package reason from its source:
// name → value.
func reasonConstants(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "reason", "reason.go"), nil, 0)
	require.NoError(t, err)
	out := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				v, err := strconv.Unquote(vs.Values[i].(*ast.BasicLit).Value)
				require.NoError(t, err)
				out[n.Name] = v
			}
		}
	}
	require.NotEmpty(t, out)
	return out
}

// reasonsUsedIn returns the reason constants that the non-test Go files
// of dir name (reason.X).
func reasonsUsedIn(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, 0)
		require.NoError(t, err)
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == "reason" && sel.Sel.Name != "Reason" && sel.Sel.Name != "Of" {
					seen[sel.Sel.Name] = true
				}
			}
			return true
		})
	}
	return keys(seen)
}

// TestReadmeStatusTable checks the README's "What the status means"
// table against package reason: every constant has a row, every reason
// in the table is a constant, and every reason the Reconciler uses is
// among them.
func TestReadmeStatusTable(t *testing.T) {
	consts := reasonConstants(t)
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	text := string(readme)
	start := strings.Index(text, "\n## What the status means\n")
	require.NotEqual(t, -1, start, "the README has the section")
	section := text[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	inTable := map[string]bool{}
	tick := regexp.MustCompile("`([A-Za-z]+)`")
	rows := 0
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) != 6 || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") || strings.TrimSpace(cells[3]) == "reason" {
			continue
		}
		rows++
		for _, m := range tick.FindAllStringSubmatch(cells[3], -1) {
			inTable[m[1]] = true
		}
	}
	require.Greater(t, rows, 20)
	values := map[string]bool{}
	for name, v := range consts {
		values[v] = true
		assert.True(t, inTable[v], "reason.%s (%q) has a row in the README's status table", name, v)
	}
	for v := range inTable {
		assert.True(t, values[v], "the README's status table lists %q, which is no constant of package reason", v)
	}
	used := reasonsUsedIn(t, ".")
	require.Contains(t, used, "NoMapping")
	for _, name := range used {
		v, ok := consts[name]
		if assert.True(t, ok, "kmm uses reason.%s, which package reason does not define", name) {
			assert.True(t, inTable[v], "kmm reports reason.%s; the README's table must explain it", name)
		}
	}
}
