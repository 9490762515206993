package install

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// tempPrefix starts the name of every file the installer writes before it
// renames it into place; the suffix is no configuration extension, so a
// runtime listing the directory never loads a half-written file.
const tempPrefix = ".kube2ra-"

// writeAtomic replaces path with data: a temporary file in the same
// directory, synced, then renamed over path, so a reader (the runtime
// exec'ing the plugin, or loading the conflist) sees the old file or the
// new one, never a part.
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tempPrefix+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	done := false
	defer func() {
		if !done {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("setting the mode of %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp.Name(), path, err)
	}
	done = true
	return nil
}

// binaryMode is the plugin's mode on the host: the runtime executes it.
const binaryMode fs.FileMode = 0o755

// installBinary copies the plugin from src (in the agent's image) to dst
// (in the host's CNI bin directory) unless dst already holds the same
// bytes, and reports whether it wrote.
func installBinary(src, dst string) (bool, error) {
	want, err := os.ReadFile(src)
	if err != nil {
		return false, fmt.Errorf("reading the plugin binary %s (--cni-plugin-binary; the image ships it at /kube2ra-cni): %w", src, err)
	}
	if have, err := os.ReadFile(dst); err == nil && bytes.Equal(have, want) {
		if st, err := os.Stat(dst); err == nil && st.Mode().Perm() == binaryMode {
			return false, nil
		}
	}
	if err := writeAtomic(dst, want, binaryMode); err != nil {
		return false, fmt.Errorf("installing the plugin into the CNI bin directory (--cni-bin-dir): %w", err)
	}
	return true, nil
}

// removeFile removes path; a file already gone is no error.
func removeFile(path string) (bool, error) {
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("removing %s: %w", path, err)
	}
	return true, nil
}
