package dirwatch

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWatchNamesWhatChanged: a write, a rename over a file and a deletion
// each arrive as the file's name, and the channel closes when the
// context ends.
func TestWatchNamesWhatChanged(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := Start(ctx, Changes, dir)
	if err != nil {
		t.Fatal(err)
	}
	next := func(want string) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case batch, ok := <-w.Batches():
				if !ok {
					t.Fatalf("watch ended waiting for %q: %v", want, w.Err())
				}
				if slices.Contains(batch, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no event named %q", want)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("1"), 0o600); err != nil {
		t.Fatal(err)
	}
	next("a")
	if err := os.WriteFile(filepath.Join(dir, "b.tmp"), []byte("2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "b.tmp"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	next("b")
	if err := os.Remove(filepath.Join(dir, "a")); err != nil {
		t.Fatal(err)
	}
	next("a")
	cancel()
	select {
	case <-waitClosed(w.Batches()):
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not end with its context")
	}
	if w.Err() != nil {
		t.Errorf("a watch ended by its context reports %v", w.Err())
	}
}

// waitClosed is closed once c is.
func waitClosed(c <-chan []string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		for range c {
		}
		close(done)
	}()
	return done
}

// TestNames: names come NUL-trimmed; an overflow or an event on the
// directory itself is "".
func TestNames(t *testing.T) {
	event := func(mask uint32, name string) []byte {
		padded := make([]byte, (len(name)/16+1)*16)
		copy(padded, name)
		if name == "" {
			padded = nil
		}
		b := make([]byte, unix.SizeofInotifyEvent)
		binary.NativeEndian.PutUint32(b[4:8], mask)
		binary.NativeEndian.PutUint32(b[12:16], uint32(len(padded)))
		return append(b, padded...)
	}
	var buf []byte
	buf = append(buf, event(unix.IN_CLOSE_WRITE, "entry-1")...)
	buf = append(buf, event(unix.IN_DELETE_SELF, "")...)
	buf = append(buf, event(unix.IN_Q_OVERFLOW, "")...)
	buf = append(buf, event(unix.IN_MOVED_TO, "a-longer-name-than-sixteen")...)
	got := Names(buf)
	want := []string{"entry-1", "", "", "a-longer-name-than-sixteen"}
	if !slices.Equal(got, want) {
		t.Fatalf("Names = %q, want %q", got, want)
	}
}

// TestStartNamesTheDirectory: a directory that cannot be watched is named.
func TestStartNamesTheDirectory(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	if _, err := Start(context.Background(), Changes, missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Start on a missing directory: %v, want an error naming it", err)
	}
}
