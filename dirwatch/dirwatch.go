// Package dirwatch follows changes in directories through inotify: for each
// read of the kernel's queue, the names of the files that changed. The CNI
// plugin's installer (it re-reads its directories on any change) and the
// CNI result cache (it re-reads the one file named) both follow theirs
// with it.
package dirwatch

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Changes is every event that can replace, rewrite or remove a file in a
// directory, or the directory itself: in-place writes, renames over it,
// deletions.
const Changes = unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

// Watch follows directories until its context ends.
type Watch struct {
	// file is the inotify descriptor, non-blocking so the runtime's poller
	// reads it and Close ends a read.
	file *os.File
	// batches receives the names of one read's events; closed when the
	// watch ends.
	batches chan []string
	// err is why the watch ended early (nil after its context ended);
	// read it once batches is closed.
	err error
}

// Start watches dirs for the events in mask (Changes, or more) until ctx
// ends. It fails when a directory cannot be watched.
func Start(ctx context.Context, mask uint32, dirs ...string) (*Watch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init: %w", err)
	}
	for _, d := range dirs {
		if _, err := unix.InotifyAddWatch(fd, d, mask); err != nil {
			_ = unix.Close(fd)
			return nil, fmt.Errorf("watching %s: %w", d, err)
		}
	}
	w := &Watch{file: os.NewFile(uintptr(fd), "inotify"), batches: make(chan []string, 16)}
	stop := context.AfterFunc(ctx, func() { _ = w.file.Close() })
	go func() {
		defer stop()
		w.read(ctx)
	}()
	return w, nil
}

// Batches receives, per read of the kernel's queue, the names of the files
// the events were about, in order; "" stands for an event on a directory
// itself or a queue overflow, after which the caller must read everything
// again. The channel is closed when the watch ends: Err says why.
func (w *Watch) Batches() <-chan []string { return w.batches }

// Err is why the watch ended before its context did; nil otherwise. Valid
// once Batches is closed.
func (w *Watch) Err() error { return w.err }

// read sends each read's names until the descriptor is closed or fails.
func (w *Watch) read(ctx context.Context) {
	defer close(w.batches)
	defer w.file.Close()
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.PathMax))
	for {
		n, err := w.file.Read(buf)
		if err != nil {
			if ctx.Err() == nil {
				w.err = fmt.Errorf("reading inotify events: %w", err)
			}
			return
		}
		select {
		case w.batches <- Names(buf[:n]):
		case <-ctx.Done():
			return
		}
	}
}

// Names are the file names of a buffer of inotify events; "" for an event
// on the watched directory itself or a queue overflow.
func Names(buf []byte) []string {
	var names []string
	for off := 0; off+unix.SizeofInotifyEvent <= len(buf); {
		raw := buf[off : off+unix.SizeofInotifyEvent]
		// struct inotify_event: wd, mask, cookie, len, then the name.
		mask := binary.NativeEndian.Uint32(raw[4:8])
		nameLen := int(binary.NativeEndian.Uint32(raw[12:16]))
		start := off + unix.SizeofInotifyEvent
		end := min(start+nameLen, len(buf))
		name := string(buf[start:end])
		for i := 0; i < len(name); i++ {
			if name[i] == 0 {
				name = name[:i]
				break
			}
		}
		if mask&unix.IN_Q_OVERFLOW != 0 {
			name = ""
		}
		names = append(names, name)
		off = end
	}
	return names
}
