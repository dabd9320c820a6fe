// Package servertest runs the real ranker-server binary on a loopback port
// for the client's tests, with the tiny model version the server's own tests
// commit, and makes the certificates a TLS test needs.
package servertest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// goDir is the repository's go/ directory, found from this file so the
// tests run from any package directory.
func goDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// Model is the committed model version the server serves: its features
// are the serving specification's, and its name and version are known.
func Model() string {
	return filepath.Join(goDir(), "internal", "model", "modeltest", "testdata", "news", "v1")
}

// The model's name and version, as its metadata.json says.
const (
	ModelName    = "news"
	ModelVersion = "v1"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// Binary is the server binary: $RANKER_SERVER (`make test` passes the one
// `make build` made), else built once from this checkout into a temporary
// directory (left for the OS to clean; each test binary builds it once).
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if binary = os.Getenv("RANKER_SERVER"); binary != "" {
			return
		}
		dir, err := os.MkdirTemp("", "ranker-server-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "ranker-server")
		build := exec.Command("go", "build", "-o", binary, "./cmd/ranker-server")
		build.Dir = goDir()
		if out, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/ranker-server: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// Server is a running ranker-server.
type Server struct {
	// Target is its gRPC address, 127.0.0.1:<port>.
	Target string
	log    string
}

// Start runs the server on a free loopback port with Model and the native
// backend (no onnxruntime needed), plus args, and stops it when the test
// ends. Its log is printed if the test fails.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	port := freePort(t)
	s := &Server{Target: fmt.Sprintf("127.0.0.1:%d", port), log: filepath.Join(t.TempDir(), "server.log")}
	logFile, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(Binary(t), append([]string{
		"--listen=" + s.Target, "--model=" + Model(), "--metrics-listen=", "--reload-interval=0",
		// No balancer sits in front of a test server to move traffic away.
		"--drain-delay=0s",
	}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); _ = logFile.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		var exit error
		select {
		case exit = <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			exit = <-exited
		}
		if t.Failed() {
			log, _ := os.ReadFile(s.log)
			t.Logf("server (exit: %v) log:\n%s", exit, log)
		}
	})
	// The server listens first and loads the model (and its state) after,
	// answering UNAVAILABLE meanwhile: it is ready to rank once it logs
	// "serving" (which the log says whatever TLS the test asked for).
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(s.log)
			t.Fatalf("ranker-server exited before listening (%v):\n%s", err, log)
		default:
		}
		if log, err := os.ReadFile(s.log); err == nil && bytes.Contains(log, []byte(`"msg":"serving"`)) {
			return s
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(s.log)
			t.Fatalf("ranker-server on %s not serving after 30 s:\n%s", s.Target, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Log is what the server has logged so far.
func (s *Server) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(s.log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func freePort(t testing.TB) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lis.Close() }()
	return lis.Addr().(*net.TCPAddr).Port
}
