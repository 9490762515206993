//go:build e2ecluster

package cluster

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// AWSRoots are the certificate authorities every AWS endpoint's chain ends
// in (https://www.amazontrust.com/repository/): SHA-256 of each DER, by name.
var AWSRoots = map[string]string{
	"Amazon Root CA 1": "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e",
	"Amazon Root CA 2": "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4",
	"Amazon Root CA 3": "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4",
	"Amazon Root CA 4": "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092",
	"Starfield Services Root Certificate Authority - G2": "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5",
}

// ImageFile returns the content of file (an absolute path) in the image of
// an oci-archive: the top layer that has it wins, as in the container.
func ImageFile(archive, file string) ([]byte, error) {
	var index struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	if err := archiveJSON(archive, "index.json", &index); err != nil {
		return nil, err
	}
	if len(index.Manifests) != 1 {
		return nil, fmt.Errorf("%s: index.json names %d manifests, want 1", archive, len(index.Manifests))
	}
	var manifest struct {
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := archiveJSON(archive, blobPath(index.Manifests[0].Digest), &manifest); err != nil {
		return nil, err
	}
	want := strings.TrimPrefix(file, "/")
	var found []byte
	for _, l := range manifest.Layers {
		err := archiveEntry(archive, blobPath(l.Digest), func(r io.Reader) error {
			content, ok, err := layerFile(r, want)
			if ok {
				found = content
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%s: layer %s: %w", archive, l.Digest, err)
		}
	}
	if found == nil {
		return nil, fmt.Errorf("the image %s has no %s", archive, file)
	}
	return found, nil
}

// MissingAWSRoots lists the AWSRoots a PEM bundle lacks.
func MissingAWSRoots(bundle []byte) []string {
	have := map[string]bool{}
	for rest := bundle; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			sum := sha256.Sum256(b.Bytes)
			have[hex.EncodeToString(sum[:])] = true
		}
	}
	var missing []string
	for name, sum := range AWSRoots {
		if !have[sum] {
			missing = append(missing, name)
		}
	}
	return missing
}

func blobPath(digest string) string { return "blobs/" + strings.Replace(digest, ":", "/", 1) }

// archiveJSON decodes the archive's file name into v.
func archiveJSON(archive, name string, v any) error {
	return archiveEntry(archive, name, func(r io.Reader) error {
		if err := json.NewDecoder(r).Decode(v); err != nil {
			return fmt.Errorf("%s: %s: %w", archive, name, err)
		}
		return nil
	})
}

// archiveEntry calls read with the archive's (a tar's) file name.
func archiveEntry(archive, name string, read func(io.Reader) error) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s has no %s", archive, name)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", archive, err)
		}
		if h.Typeflag == tar.TypeReg && path.Clean(strings.TrimPrefix(h.Name, "./")) == name {
			return read(tr)
		}
	}
}

// layerFile returns name's content in a layer (a tar, gzip-compressed or
// not), and whether the layer has it.
func layerFile(layer io.Reader, name string) ([]byte, bool, error) {
	br := bufio.NewReader(layer)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, false, err
		}
		r = zr
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		if h.Typeflag == tar.TypeReg && path.Clean(strings.TrimPrefix(h.Name, "./")) == name {
			b, err := io.ReadAll(tr)
			return b, err == nil, err
		}
	}
}
