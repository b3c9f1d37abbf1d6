package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestNoGinContextUsedAsContext: no code of this module hands a
// *gin.Context on as a context.Context. gin recycles a Context for the
// next request as soon as its handler returns, and whatever kept it as a
// context (net/http's dialer goroutine, a pipelined Redis call, a Kafka
// produce) then reads a Context that another request is writing: a data
// race the race detector caught in receive (a cancel routed to a worker,
// whose connection was still being dialled after the answer). Handlers
// pass c.Request.Context() instead, which belongs to the request alone.
//
// The check type-checks every package of the module from source, its
// imports from the export data `go list -export` leaves in the build
// cache, and looks at every call argument, assignment, return value and
// composite literal field whose type is a context.Context.
func TestNoGinContextUsedAsContext(t *testing.T) {
	pkgs, exports := listModule(t)
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := exports[path]
		if !ok || f == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(f)
	})
	if len(pkgs) < 10 {
		t.Fatalf("only %d packages of the module listed; the listing looks wrong", len(pkgs))
	}
	var found []string
	for _, p := range pkgs {
		var files []*ast.File
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		info := &types.Info{Types: map[ast.Expr]types.TypeAndValue{}, Defs: map[*ast.Ident]types.Object{}}
		conf := types.Config{Importer: imp.(types.ImporterFrom), Error: func(error) {}}
		if _, err := conf.Check(p.ImportPath, fset, files, info); err != nil {
			t.Fatalf("type-checking %s: %v", p.ImportPath, err)
		}
		for _, f := range files {
			found = append(found, ginAsContext(fset, info, f)...)
		}
	}
	sort.Strings(found)
	if len(found) > 0 {
		t.Errorf("a *gin.Context is used as a context.Context (pass c.Request.Context(): gin reuses c once the handler returns):\n  %s", strings.Join(found, "\n  "))
	}
}

type listedPkg struct {
	ImportPath string
	Dir        string
	Export     string
	GoFiles    []string
	Module     *struct{ Path string }
}

// listModule returns the module's own packages and the export data file
// of every package in their import graph.
func listModule(t *testing.T) ([]listedPkg, map[string]string) {
	t.Helper()
	cmd := exec.Command("go", "list", "-export", "-deps", "-json=ImportPath,Dir,Export,GoFiles,Module", "./...")
	cmd.Dir = moduleRoot(t)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	exports := map[string]string{}
	var own []listedPkg
	for {
		var p listedPkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		exports[p.ImportPath] = p.Export
		if p.Module != nil && p.Module.Path == "github.com/sorakaq/sorakaq" && len(p.GoFiles) > 0 {
			own = append(own, p)
		}
	}
	return own, exports
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// ginAsContext lists where f passes, assigns or returns an expression of
// type *gin.Context as a context.Context.
func ginAsContext(fset *token.FileSet, info *types.Info, f *ast.File) []string {
	var out []string
	report := func(e ast.Expr, want types.Type) {
		if isContext(want) && isGinContext(info.TypeOf(e)) {
			out = append(out, fset.Position(e.Pos()).String())
		}
	}
	var results []*types.Tuple // of the enclosing functions
	var visit func(n ast.Node) bool
	// within visits a function's body knowing its results (for returns)
	within := func(fn types.Type, body *ast.BlockStmt) bool {
		if body != nil {
			results = append(results, signatureOf(fn).Results())
			ast.Inspect(body, visit)
			results = results[:len(results)-1]
		}
		return false
	}
	visit = func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncDecl:
			return within(info.Defs[n.Name].Type(), n.Body)
		case *ast.FuncLit:
			return within(info.TypeOf(n), n.Body)
		case *ast.CallExpr:
			sig, ok := info.TypeOf(n.Fun).Underlying().(*types.Signature)
			if !ok {
				return true // a conversion
			}
			for i, a := range n.Args {
				report(a, paramType(sig, i, n.Ellipsis.IsValid()))
			}
		case *ast.AssignStmt:
			if len(n.Lhs) == len(n.Rhs) {
				for i := range n.Lhs {
					report(n.Rhs[i], info.TypeOf(n.Lhs[i]))
				}
			}
		case *ast.ValueSpec:
			if n.Type != nil {
				for _, v := range n.Values {
					report(v, info.TypeOf(n.Type))
				}
			}
		case *ast.ReturnStmt:
			if len(results) == 0 {
				break
			}
			if res := results[len(results)-1]; res.Len() == len(n.Results) {
				for i, r := range n.Results {
					report(r, res.At(i).Type())
				}
			}
		case *ast.CompositeLit:
			for i, el := range n.Elts {
				v, key := el, ast.Expr(nil)
				if kv, ok := el.(*ast.KeyValueExpr); ok {
					v, key = kv.Value, kv.Key
				}
				report(v, elemType(info.TypeOf(n), i, key))
			}
		case *ast.SendStmt:
			if ch, ok := info.TypeOf(n.Chan).Underlying().(*types.Chan); ok {
				report(n.Value, ch.Elem())
			}
		}
		return true
	}
	ast.Inspect(f, visit)
	return out
}

// elemType is the type the i-th element (or the one with key) of a
// composite literal of type t must have.
func elemType(t types.Type, i int, key ast.Expr) types.Type {
	if t == nil {
		return nil
	}
	switch u := t.Underlying().(type) {
	case *types.Struct:
		if id, ok := key.(*ast.Ident); ok {
			for j := range u.NumFields() {
				if u.Field(j).Name() == id.Name {
					return u.Field(j).Type()
				}
			}
			return nil
		}
		if i < u.NumFields() {
			return u.Field(i).Type()
		}
	case *types.Map:
		return u.Elem()
	case *types.Slice:
		return u.Elem()
	case *types.Array:
		return u.Elem()
	case *types.Pointer: // &T{...} elided in a literal of pointers
		return elemType(u.Elem(), i, key)
	}
	return nil
}

func signatureOf(t types.Type) *types.Signature {
	if s, ok := t.(*types.Signature); ok {
		return s
	}
	return types.NewSignatureType(nil, nil, nil, nil, nil, false)
}

func paramType(sig *types.Signature, i int, spread bool) types.Type {
	ps := sig.Params()
	if sig.Variadic() && i >= ps.Len()-1 {
		last := ps.At(ps.Len() - 1).Type()
		if spread {
			return last
		}
		return last.(*types.Slice).Elem()
	}
	if i < ps.Len() {
		return ps.At(i).Type()
	}
	return nil
}

func isContext(t types.Type) bool {
	n, ok := t.(*types.Named)
	return ok && n.Obj().Pkg() != nil && n.Obj().Pkg().Path() == "context" && n.Obj().Name() == "Context"
}

func isGinContext(t types.Type) bool {
	p, ok := t.(*types.Pointer)
	if !ok {
		return false
	}
	n, ok := p.Elem().(*types.Named)
	return ok && n.Obj().Pkg() != nil && n.Obj().Pkg().Path() == "github.com/gin-gonic/gin" && n.Obj().Name() == "Context"
}
