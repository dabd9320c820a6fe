package kafkastate

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"

	"ranker/internal/features/backendtest"
	"ranker/internal/features/embedded"
)

// servePeer serves s's snapshot as a peer would (--state-peer-listen) and
// returns the peer's URL.
func servePeer(t *testing.T, s *Store) string {
	t.Helper()
	srv := httptest.NewServer(s.SnapshotHandler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// deleteBefore deletes the topic's records before offset, as retention
// would.
func deleteBefore(t *testing.T, s *Store, offset int64) {
	t.Helper()
	var to kadm.Offsets
	to.Add(kadm.Offset{Topic: s.target.Topic, Partition: 0, At: offset})
	res, err := kadm.NewClient(s.producer).DeleteRecords(context.Background(), to)
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// A topic whose first records retention deleted: a replica on an empty
// directory is refused alone, naming the offsets, and refused by peers that
// are down or of another topic, naming each; with a peer of its topic among
// them it boots from that peer's snapshot, keeps it as its own, and holds
// one process's state.
func TestANewReplicaBootsFromAPeersSnapshot(t *testing.T) {
	sc := backendtest.NewScenario(53, 60)
	url := sharedURL(t)
	all := calls(sc)
	half := len(all) / 2
	reference := openEmbedded(t, sc.Dims)
	for _, c := range all {
		if _, err := c.send(reference); err != nil {
			t.Fatal(err)
		}
	}

	// Peer A writes half the batches and snapshots them (on Close, the way
	// a restart does), then serves that snapshot from its reopened state.
	dirA := t.TempDir()
	first, err := tryOpen(url, sc.Dims, Options{Dir: dirA})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range all[:half] {
		if _, err := c.send(first); err != nil {
			t.Fatal(err)
		}
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	peer := openStore(t, url, dirA, sc.Dims)
	snapAt := peer.snapNext
	if !peer.snapHave || snapAt == 0 {
		t.Fatalf("peer serves a snapshot %v at offset %d, want one after the first half", peer.snapHave, snapAt)
	}
	deleteBefore(t, peer, snapAt)
	for _, c := range all[half:] {
		if _, err := c.send(peer); err != nil {
			t.Fatal(err)
		}
	}

	// A peer of another topic, with a snapshot.
	otherDir, otherURL := t.TempDir(), sharedURL(t)
	other, err := tryOpen(otherURL, sc.Dims, Options{Dir: otherDir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := all[0].send(other); err != nil {
		t.Fatal(err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	otherPeer := servePeer(t, openStore(t, otherURL, otherDir, sc.Dims))
	down := httptest.NewServer(nil)
	down.Close() // a peer that refuses connections (as a replica does while it opens)

	for _, c := range []struct {
		name  string
		peers []string
		want  []string
	}{
		{name: "no peers", want: []string{fmt.Sprintf("starts at offset %d, but the state needs the records from offset 0 on", snapAt), "no peers"}},
		{name: "a peer down and one of another topic", peers: []string{down.URL, otherPeer},
			want: []string{fmt.Sprintf("starts at offset %d", snapAt), down.URL + ": ", otherPeer + `: serves a snapshot of "kafka topic ` + other.target.Topic}},
	} {
		dir := t.TempDir()
		s, err := tryOpen(url, sc.Dims, Options{Dir: dir, Peers: c.peers})
		if err == nil {
			_ = s.Close()
			t.Fatalf("%s: opened; want a refusal", c.name)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: got %v, want it to say %q", c.name, err, w)
			}
		}
		if _, found, _ := embedded.ReadSnapshot(dir); found {
			t.Errorf("%s: a refused open left a snapshot in its directory", c.name)
		}
	}

	dirB := t.TempDir()
	peerURL := servePeer(t, peer)
	booted, err := tryOpen(url, sc.Dims, Options{Dir: dirB, Peers: []string{down.URL, otherPeer, peerURL}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = booted.Close() })
	// No waiting: Open returns caught up.
	sameState(t, sc, "replica booted from a peer", booted, reference)
	if snap, found, err := embedded.ReadSnapshot(dirB); err != nil || !found || snap.Next != snapAt || snap.Log != peer.log {
		t.Errorf("the booted replica's own snapshot: found %v, %q at %d, %v; want the peer's, %q at %d", found, snap.Log, snap.Next, err, peer.log, snapAt)
	}
	// It serves that snapshot in turn.
	if booted.snapNext != snapAt || !booted.snapHave {
		t.Errorf("the booted replica serves offset %d (%v), want %d", booted.snapNext, booted.snapHave, snapAt)
	}

	// Once retention passes the peer's snapshot too, the peer is refused.
	logStart := peer.appliedOffset() - 1
	deleteBefore(t, peer, logStart)
	if s, err := tryOpen(url, sc.Dims, Options{Dir: t.TempDir(), Peers: []string{peerURL}}); err == nil {
		_ = s.Close()
		t.Fatal("opened from a peer whose snapshot the topic no longer continues")
	} else if want := fmt.Sprintf("%s: its snapshot ends at offset %d, before the topic's log start %d", peerURL, snapAt, logStart); !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want it to say %q", err, want)
	}
}
