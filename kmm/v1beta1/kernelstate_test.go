package v1beta1

import (
	"go/ast"
	"go/parser"
	"go/token"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestKernelStateDocs checks that the KernelState constants, the list in
// KernelState's doc and the list in KernelStatus.State's doc are the same
// values, so the documentation can never drift from the code.
func TestKernelStateDocs(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "module_types.go", nil, parser.ParseComments)
	require.NoError(t, err)
	var consts []string
	var typeDoc, fieldDoc string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok {
			continue
		}
		for _, s := range g.Specs {
			switch s := s.(type) {
			case *ast.ValueSpec:
				if id, ok := s.Type.(*ast.Ident); !ok || id.Name != "KernelState" {
					continue
				}
				for _, v := range s.Values {
					lit := v.(*ast.BasicLit)
					val, err := strconv.Unquote(lit.Value)
					require.NoError(t, err)
					consts = append(consts, val)
				}
			case *ast.TypeSpec:
				switch s.Name.Name {
				case "KernelState":
					typeDoc = g.Doc.Text()
				case "KernelStatus":
					for _, fld := range s.Type.(*ast.StructType).Fields.List {
						if fld.Names[0].Name == "State" {
							fieldDoc = fld.Doc.Text()
						}
					}
				}
			}
		}
	}
	require.NotEmpty(t, consts)
	var listed []string
	for _, m := range regexp.MustCompile(`(?m)^  - (\w+):`).FindAllStringSubmatch(typeDoc, -1) {
		listed = append(listed, m[1])
	}
	var inField []string
	for _, m := range regexp.MustCompile(`\b([A-Z]\w+)\b[,.]? ?`).FindAllStringSubmatch(fieldDoc, -1) {
		if m[1] != "State" && m[1] != "KernelState" {
			inField = append(inField, m[1])
		}
	}
	slices.Sort(consts)
	slices.Sort(listed)
	slices.Sort(inField)
	assert.Equal(t, consts, listed, "KernelState's doc lists exactly the constants")
	assert.Equal(t, consts, inField, "KernelStatus.State's doc lists exactly the constants")
}
