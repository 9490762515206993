package handover

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// StateName is the file in the handover directory that keeps the serving
// agent's state (OfferOptions.State: its IMDSv2 token key) for whichever
// agent starts next when there is no handover: the agent crashed, was
// OOM-killed, or its pod was deleted. Without it the next agent mints with
// a new key and every token pods hold gets 401; SDKs that keep a token for
// its whole lifetime (the Rust SDK retries a 401 with the same cached
// token) would stay without metadata for up to its 6 hours.
const StateName = "state"

// maxStateBytes bounds the state file read back.
const maxStateBytes = 1 << 10

// StatePath is the state file in dir.
func StatePath(dir string) string { return filepath.Join(dir, StateName) }

// LoadState returns the state the last agent saved in dir, nil when there
// is none (a first start, or a node rebooted: the chart's directory is on
// /run, a tmpfs). A state file in a directory not owned by this uid with
// mode 0700 is refused (anyone else could have written it).
func LoadState(dir string) ([]byte, error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err := PrepareDir(dir); err != nil {
		return nil, err
	}
	f, err := os.Open(StatePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the saved state %s: %w", StatePath(dir), err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the saved state %s: %w", StatePath(dir), err)
	}
	if len(b) > maxStateBytes {
		return nil, fmt.Errorf("the saved state %s is over %d bytes: not kube2ra's (remove it)", StatePath(dir), maxStateBytes)
	}
	return b, nil
}

// SaveState writes state to dir's state file (mode 0600, replaced whole:
// a reader sees the old file or the new one, never a part).
func SaveState(dir string, state []byte) error {
	if err := PrepareDir(dir); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+StateName+"-*")
	if err != nil {
		return fmt.Errorf("saving the state in %s: %w", dir, err)
	}
	tmp := f.Name()
	_, err = f.Write(state)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, StatePath(dir))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("saving the state in %s: %w", dir, err)
	}
	return nil
}

// RemoveState removes dir's state file, if any (`kube2ra cleanup`, once no
// agent serves the node).
func RemoveState(dir string) error {
	if err := os.Remove(StatePath(dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the saved state %s: %w", StatePath(dir), err)
	}
	return nil
}
