// Package auth secures the gRPC server: TLS with certificates reloaded when
// their files change, mutual TLS, and callers identified by a bearer token or
// a client certificate, each allowed the methods of its roles.
package auth

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCheckEvery bounds how often the files behind a reloader are looked
// at: a stat per handshake or call would cost little, but once a second is
// plenty for files that rotate every few weeks.
const DefaultCheckEvery = time.Second

// reloader holds the value parsed from a set of files and parses them again
// when any of them changes (another inode, size or modification time: a
// Kubernetes Secret volume swaps a symlink, cert-manager rewrites in place).
// A new version that does not parse is logged and the last good value stays,
// so a half-written rotation never takes the server down.
type reloader[T any] struct {
	what    string // for logs: "tls key pair", "client CA", "auth tokens"
	paths   []string
	load    func() (T, error)
	every   time.Duration
	logger  *slog.Logger
	now     func() time.Time
	current atomic.Pointer[T]
	due     atomic.Int64 // unix nanoseconds of the next look at the files

	mu      sync.Mutex // one reload at a time; guards seen and statErr
	seen    []os.FileInfo
	statErr string // the last stat error logged, so a missing file is logged once
}

// newReloader loads the files once: an error here (naming the file) is a
// configuration error at startup.
func newReloader[T any](what string, paths []string, every time.Duration, logger *slog.Logger, load func() (T, error)) (*reloader[T], error) {
	r := &reloader[T]{what: what, paths: paths, load: load, every: every, logger: logger, now: time.Now}
	seen, err := r.stat()
	if err != nil {
		return nil, err
	}
	v, err := load()
	if err != nil {
		return nil, err
	}
	r.seen = seen
	r.current.Store(&v)
	r.due.Store(r.now().Add(every).UnixNano())
	return r, nil
}

// Get returns the current value, first reloading the files if they changed
// and the last look is older than the check interval.
func (r *reloader[T]) Get() T {
	if now := r.now(); now.UnixNano() >= r.due.Load() && r.mu.TryLock() {
		// Callers that find the lock taken use the current value rather than
		// queue behind a reload.
		r.due.Store(now.Add(r.every).UnixNano())
		r.check()
		r.mu.Unlock()
	}
	return *r.current.Load()
}

func (r *reloader[T]) check() {
	seen, err := r.stat()
	if err != nil {
		if err.Error() != r.statErr {
			r.logger.Error(r.what+" unreadable; the last good one stays", "error", err.Error())
			r.statErr = err.Error()
		}
		return
	}
	r.statErr = ""
	if sameFiles(seen, r.seen) {
		return
	}
	// Remember what was tried even if it fails: the same broken files are
	// not parsed (and logged) again, and any further change is retried.
	r.seen = seen
	v, err := r.load()
	if err != nil {
		r.logger.Error(r.what+" refused; the last good one stays", "error", err.Error())
		return
	}
	r.current.Store(&v)
	r.logger.Info(r.what+" reloaded", "files", r.paths)
}

func (r *reloader[T]) stat() ([]os.FileInfo, error) {
	infos := make([]os.FileInfo, len(r.paths))
	for i, p := range r.paths {
		info, err := os.Stat(p) // follows the symlinks of a Secret volume
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.what, err)
		}
		infos[i] = info
	}
	return infos, nil
}

func sameFiles(a, b []os.FileInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !os.SameFile(a[i], b[i]) || a[i].Size() != b[i].Size() || !a[i].ModTime().Equal(b[i].ModTime()) {
			return false
		}
	}
	return true
}
