// Package modeltest gives tests the onnxruntime library and the model that
// `make test-go` provides: the library from the pinned wheel and a model the
// Python pipeline has just trained and exported.
package modeltest

import (
	"os"
	"testing"

	"ranker/internal/model"
)

// Env returns RANKER_ORT_LIB and RANKER_TEST_MODEL, with onnxruntime loaded.
func Env(t testing.TB) (lib, dir string) {
	t.Helper()
	lib, dir = os.Getenv("RANKER_ORT_LIB"), os.Getenv("RANKER_TEST_MODEL")
	if lib == "" || dir == "" {
		t.Fatal("RANKER_ORT_LIB and RANKER_TEST_MODEL must be set; run `make test-go`, which trains the test model and finds the library")
	}
	if err := model.InitRuntime(lib); err != nil {
		t.Fatal(err)
	}
	return lib, dir
}
