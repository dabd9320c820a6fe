// Package layers_test holds the Go packages to their layers, as
// python/ranker_tests/test_layout.py does for the Python ones.
package layers_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// module is the path every package of this module starts with.
const module = "ranker/"

// layers places every package of the module (by its path under go/, or a
// "dir/..." pattern for all packages below dir) on a layer. A package may
// import only packages of a strictly lower layer: packages of one layer are
// peers that know nothing of each other, so a job can be read, tested and
// replaced without the ones beside or above it. The numbers leave gaps for
// packages to come. Only the non-test imports are held: a test may bring up
// what it tests with the packages around it.
var layers = []struct {
	pkg   string
	layer int
	why   string
}{
	{"gen/...", 0, "generated code (ONNX protobuf): imports nothing of ours"},

	{"internal/auth", 10, "vocabularies and observability every job uses: credentials, wire codec, traces, metrics, the exposure log"},
	{"internal/codec", 10, ""},
	{"internal/tracing", 10, ""},
	{"internal/metrics", 10, "the registry and the server's own series; the packages that own a series (overload) register it themselves"},
	{"internal/exposure", 10, ""},
	{"internal/model/modeltest", 10, "test fixtures (the committed models), for any package's tests"},
	{"internal/exploration", 15, "the exploration policy and its propensities: pure, on rankings; experiment variants and the config name its policy"},
	{"internal/rpcerr", 15, "the gRPC statuses the request path answers with (ErrorInfo domain from auth)"},

	{"internal/treeensemble", 20, "the jobs, each on its own: the scoring kernel, knowing no model artifact nor server"},
	{"internal/features", 20, "feature computation behind features.Service: never its own backends, nor the request path"},
	{"internal/experiment", 20, "assignment and the experiment algorithms (team draft, Spearman): pure, on rankings"},
	{"internal/overload", 20, "load shedding and the scoring parallelism policy: returns refusals, names no status of the server's"},
	{"internal/request", 20, "validation, column mapping, ordering, strict refusals of one request"},
	{"internal/features/embedded", 24, "the state of one process, and the snapshot format the Kafka state's replicas reuse"},
	{"internal/features/...", 25, "the feature state's backends, behind features.Service; constructed by the wiring"},
	{"internal/model", 30, "a model artifact: metadata, golden rows, a scorer (native kernel or onnxruntime)"},
	{"internal/registry/...", 35, "the parts of the registry (reading the model root, the version lifecycle)"},
	{"internal/registry", 40, "the model versions a process serves"},
	{"internal/loadgen", 40, "load generation against a server, through the gRPC client only"},
	{"internal/config", 50, "flags and environment to one Config (knows the defaults of the jobs)"},
	{"internal/server", 60, "the request path: uses every job, wires none"},

	{"cmd/...", 70, "thin mains and the process wiring: may import anything; nothing imports them"},
}

// layerOf is the layer of a package path relative to the module, and false
// when no entry places it; an exact entry wins over a pattern.
func layerOf(rel string) (int, bool) {
	for _, l := range layers {
		if l.pkg == rel {
			return l.layer, true
		}
	}
	for _, l := range layers {
		if dir, ok := strings.CutSuffix(l.pkg, "/..."); ok && strings.HasPrefix(rel, dir+"/") {
			return l.layer, true
		}
	}
	return 0, false
}

type listedPackage struct {
	ImportPath string
	GoFiles    []string
	Imports    []string
	Error      *struct{ Err string }
}

// packages lists the module's packages with their non-test imports.
func packages(t *testing.T) []listedPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,GoFiles,Imports,Error", "./...")
	cmd.Dir = ".." // the module root, go/
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []listedPackage
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

func TestPackagesImportOnlyLowerLayers(t *testing.T) {
	for _, p := range packages(t) {
		if p.Error != nil {
			t.Errorf("%s: %s", p.ImportPath, p.Error.Err) // an import cycle among them
			continue
		}
		rel, ok := strings.CutPrefix(p.ImportPath, module)
		if !ok || len(p.GoFiles) == 0 {
			continue // a directory of tests only, such as this one
		}
		layer, placed := layerOf(rel)
		if !placed {
			t.Errorf("%s is on no layer: add it to the layers table in go/internal/layers_test.go", rel)
			continue
		}
		for _, imp := range p.Imports {
			dep, ours := strings.CutPrefix(imp, module)
			if !ours {
				continue // the standard library, dependencies, the generated client module
			}
			depLayer, placed := layerOf(dep)
			if placed && depLayer >= layer {
				t.Errorf("%s (layer %d) imports %s (layer %d): a package may import only lower layers", rel, layer, dep, depLayer)
			}
		}
	}
}

// TestLayersTableIsConsistent: every exact entry names a package that
// exists, so the table cannot keep rows for code that has moved.
func TestLayersTableIsConsistent(t *testing.T) {
	exists := map[string]bool{}
	for _, p := range packages(t) {
		if len(p.GoFiles) > 0 {
			exists[strings.TrimPrefix(p.ImportPath, module)] = true
		}
	}
	for _, l := range layers {
		if !strings.HasSuffix(l.pkg, "/...") && !exists[l.pkg] {
			t.Errorf("layers table: %s is no package of the module", l.pkg)
		}
	}
}
