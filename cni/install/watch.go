package install

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// watchMask is every change that can replace, rewrite or remove a file in
// a watched directory: in-place writes, renames over it, deletions.
const watchMask = unix.IN_CREATE | unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO |
	unix.IN_MOVED_FROM | unix.IN_DELETE | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ATTRIB

// dirWatch signals on changes in directories through inotify. It carries
// no event detail: the installer re-reads the directory on each signal,
// so coalesced or overflowed events lose nothing.
type dirWatch struct {
	// file is the inotify descriptor, pollable, so Close ends a Read.
	file *os.File
	// changed receives a value after each batch of events (capacity 1).
	changed chan struct{}
}

// watchDirs starts watching dirs until ctx ends.
func watchDirs(ctx context.Context, dirs ...string) (*dirWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init: %w", err)
	}
	for _, d := range dirs {
		if _, err := unix.InotifyAddWatch(fd, d, watchMask); err != nil {
			_ = unix.Close(fd)
			return nil, fmt.Errorf("watching %s: %w", d, err)
		}
	}
	w := &dirWatch{file: os.NewFile(uintptr(fd), "inotify"), changed: make(chan struct{}, 1)}
	go func() {
		<-ctx.Done()
		_ = w.file.Close()
	}()
	go w.read()
	return w, nil
}

// read turns event batches into signals until the descriptor is closed.
func (w *dirWatch) read() {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.PathMax))
	for {
		if _, err := w.file.Read(buf); err != nil {
			// Closed at the end of the watch; any other failure leaves
			// the installer to its resync.
			return
		}
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
}
