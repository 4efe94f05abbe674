package client

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The client must never depend on the intermediate's code, as in circuit
// relay v2: the ends and the relay share only the wire format.
func TestClientDoesNotImportServer(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no source files: %v", err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, "github.com/peer-overlay/peer/overlay") && path != "github.com/peer-overlay/peer/overlay/onehop/wire" {
				t.Errorf("%s imports %s; the client may import only onehop/wire of the overlay", f, path)
			}
		}
	}
}
