package kafkastate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"ranker/internal/features"
	"ranker/internal/features/embedded"
)

// A replica serves its snapshot to its peers, so that one without a usable
// snapshot of its own (a new pod, a lost volume, a snapshot older than the
// topic's log start) loads a peer's and applies only the records after it,
// instead of the topic from offset 0, which retention no longer keeps.
//
// It serves the newest snapshot on disk rather than writing a fresh one per
// request: the apply loop writes one every snapshotInterval (or
// embedded.SnapshotEvery bytes) while records arrive, so the file is at most
// that far behind, which MinRetention keeps well inside the topic; a fresh
// one would stop the apply loop (the image shares the state's slices) for
// the whole encoding on every request, and a booting peer applies the few
// records in between in a moment.

// SnapshotPath is where a replica serves its snapshot (--state-peer-listen).
const SnapshotPath = "/state/snapshot"

// The response headers that say which snapshot a body is, so a replica
// refuses one of another log, or one behind the topic's log start, before
// reading it.
const (
	headerLog  = "Ranker-State-Log"
	headerNext = "Ranker-State-Next"
)

// DefaultPeerTimeout bounds the fetch from one peer: a snapshot of a few GB
// at a few hundred MB/s in the cluster, with room to spare.
const DefaultPeerTimeout = 2 * time.Minute

// peerDownload is the directory (in the state directory) a peer's snapshot
// is written to before it is checked and renamed into place.
const peerDownload = "peer-snapshot.tmp"

// SnapshotHandler serves this replica's newest snapshot: the file
// embedded.WriteSnapshot wrote, streamed, its log and next offset in the
// headers. 503 while there is none (no --state-dir, or none written yet).
// It holds every reader's history: serve it only to the other replicas.
func (s *Store) SnapshotHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		s.snapMu.Lock()
		next, have := s.snapNext, s.snapHave
		var f *os.File
		var err error
		if have {
			// Opened under the lock: the file and its offset are one
			// snapshot even if a newer one is renamed into place meanwhile.
			f, err = os.Open(filepath.Join(s.dir, embedded.SnapshotFile))
		}
		s.snapMu.Unlock()
		if !have {
			http.Error(w, "no snapshot yet", http.StatusServiceUnavailable)
			return
		}
		if err != nil {
			http.Error(w, "snapshot: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer func() { _ = f.Close() }()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set(headerLog, s.log)
		w.Header().Set(headerNext, strconv.FormatInt(next, 10))
		if info, err := f.Stat(); err == nil {
			w.Header().Set("Content-Length", strconv.FormatInt(info.Size(), 10))
		}
		if r.Method == http.MethodHead {
			return
		}
		if _, err := io.Copy(w, f); err != nil {
			s.logger.Warn("kafka state snapshot to a peer cut short", "peer", r.RemoteAddr, "error", err.Error())
		}
	})
}

// setServed records which snapshot is on disk (the caller holds snapMu or
// is Open, before serving starts).
func (s *Store) setServed(next int64) {
	s.snapNext, s.snapHave = next, true
}

// fromPeers loads the first snapshot a peer serves of this log whose next
// offset is at or after start, the topic's log start (a snapshot past the
// high watermark read at open is fine: the topic grew since; the log's id
// tells a recreated topic), and keeps it in the state directory; it returns the offset to apply from,
// or an error naming every peer tried and why each was refused.
func (s *Store) fromPeers(ctx context.Context, start int64) (int64, error) {
	var refusals []string
	for _, peer := range s.peers {
		next, err := s.fromPeer(ctx, peer, start)
		if err == nil {
			s.logger.Info("kafka state snapshot loaded from a peer", "peer", peer, "offset", next, "log_start", start)
			return next, nil
		}
		if ctx.Err() != nil {
			return 0, err
		}
		s.logger.Warn("kafka state peer snapshot refused", "peer", peer, "error", err.Error())
		refusals = append(refusals, fmt.Sprintf("%s: %v", peer, err))
	}
	return 0, fmt.Errorf("no peer serves a snapshot of %s at or after offset %d (%s)", s.log, start, strings.Join(refusals, "; "))
}

func (s *Store) fromPeer(ctx context.Context, peer string, start int64) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.peerTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(peer, "/")+SnapshotPath, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return 0, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	// The headers let a wrong snapshot be refused before it is read; the
	// file itself is checked again once read.
	if log := resp.Header.Get(headerLog); log != s.log {
		return 0, fmt.Errorf("serves a snapshot of %q, not of %s", log, s.log)
	}
	if next, err := strconv.ParseInt(resp.Header.Get(headerNext), 10, 64); err != nil {
		return 0, fmt.Errorf("header %s %q: %w", headerNext, resp.Header.Get(headerNext), err)
	} else if next < start {
		return 0, behind(next, start)
	}

	dir := s.dir
	if dir == "" { // no state directory: the snapshot is only loaded
		if dir, err = os.MkdirTemp("", "ranker-state-"); err != nil {
			return 0, err
		}
		defer func() { _ = os.RemoveAll(dir) }()
	}
	download := filepath.Join(dir, peerDownload)
	_ = os.RemoveAll(download) // a download cut short before
	if err := os.Mkdir(download, 0o755); err != nil {
		return 0, err
	}
	defer func() { _ = os.RemoveAll(download) }()
	if err := writeSynced(filepath.Join(download, embedded.SnapshotFile), resp.Body); err != nil {
		return 0, fmt.Errorf("reading its snapshot: %w", err)
	}
	snap, _, err := embedded.ReadSnapshot(download)
	if err != nil {
		return 0, err
	}
	if snap.Log != s.log {
		return 0, fmt.Errorf("its snapshot file is of %q, not of %s", snap.Log, s.log)
	}
	if snap.Next < start {
		return 0, behind(snap.Next, start)
	}
	st, err := features.StateFromImage(s.spec, s.limits.EmbeddingDimensions, snap.Image)
	if err != nil {
		return 0, fmt.Errorf("its snapshot: %w", err)
	}
	if s.dir != "" {
		// Kept as this replica's own snapshot, atomically as
		// embedded.WriteSnapshot keeps one: renamed whole, then the
		// directory synced.
		if err := os.Rename(filepath.Join(download, embedded.SnapshotFile), filepath.Join(s.dir, embedded.SnapshotFile)); err != nil {
			return 0, err
		}
		if err := syncDir(s.dir); err != nil {
			return 0, err
		}
		s.setServed(snap.Next)
	}
	s.State, s.lastPrune = st, snap.Image.Watermark
	return snap.Next, nil
}

func behind(next, start int64) error {
	return fmt.Errorf("its snapshot ends at offset %d, before the topic's log start %d", next, start)
}

func writeSynced(path string, body io.Reader) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, body)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
