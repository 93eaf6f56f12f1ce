package agent

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestFileOrder checks the reading order the package doc gives: a file
// uses (names a package-level definition, a method or a field declared
// in) only files listed below it, and the list names every non-test file.
func TestFileOrder(t *testing.T) {
	fset := token.NewFileSet()
	doc, err := parser.ParseFile(fset, "agent.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	in := false
	for line := range strings.SplitSeq(doc.Doc.Text(), "\n") {
		switch {
		case strings.HasPrefix(line, "Reading order."):
			in = true
		case in && strings.HasPrefix(line, "\t"):
			order = append(order, strings.Fields(line)[0])
		}
	}
	names, _ := filepath.Glob("*.go")
	var files []*ast.File
	for _, n := range names {
		if strings.HasSuffix(n, "_test.go") {
			continue
		}
		if !slices.Contains(order, n) {
			t.Errorf("%s is not in the package doc's reading order", n)
		}
		src, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, n, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	info := &types.Info{Uses: map[*ast.Ident]types.Object{}}
	// Only this package's definitions count: its imports are left
	// unresolved (type-checking them from source takes seconds), and the
	// errors that follow are ignored.
	conf := types.Config{Importer: noImports{}, Error: func(error) {}}
	pkg, _ := conf.Check("github.com/addrreg/addrreg/agent", fset, files, info)
	against := map[string]bool{}
	for id, obj := range info.Uses {
		if obj == nil || obj.Pkg() != pkg || !obj.Pos().IsValid() {
			continue
		}
		if v, ok := obj.(*types.Var); ok && !v.IsField() && v.Parent() != pkg.Scope() {
			continue // a local variable
		}
		if _, ok := obj.(*types.Func); !ok && obj.Parent() != nil && obj.Parent() != pkg.Scope() {
			continue // local types and constants
		}
		from := filepath.Base(fset.Position(id.Pos()).Filename)
		to := filepath.Base(fset.Position(obj.Pos()).Filename)
		if slices.Index(order, to) < slices.Index(order, from) {
			against[from+" uses "+obj.Name()+" of "+to] = true
		}
	}
	for u := range against {
		t.Errorf("against the reading order: %s", u)
	}
}

type noImports struct{}

func (noImports) Import(string) (*types.Package, error) { return nil, errors.New("not resolved") }
