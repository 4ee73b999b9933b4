package registry

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/klauspost/compress/zstd"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// zstdMaxWindow bounds the memory a zstd layer may make the decoder use.
// zstd's default levels use windows of at most 8 MiB; "--long" uses 128.
const zstdMaxWindow = 128 << 20

// layerStream reads one layer blob and checks it against its digests: the
// blob's digest (from the manifest) over the compressed bytes, and its
// diff ID (from the image config) over the uncompressed tar. The checks
// need the whole stream, so finish reads whatever the tar reader left.
type layerStream struct {
	blob    *hashingReader // the compressed bytes as fetched
	buf     *bufio.Reader  // over blob
	tar     *hashingReader // the uncompressed bytes
	closers []io.Closer
	zstd    *zstd.Decoder

	digest, diffID v1.Hash
	size           int64 // the blob's size from the manifest, or -1
}

// openLayer opens l's blob. Errors come from the registry.
func openLayer(l v1.Layer) (*layerStream, error) {
	digest, err := l.Digest()
	if err != nil {
		return nil, err
	}
	diffID, err := l.DiffID()
	if err != nil {
		return nil, corrupt("layer %s has no diff ID in the image config: %v", digest, err)
	}
	size, err := l.Size()
	if err != nil {
		size = -1
	}
	bh, err := newHash(digest)
	if err != nil {
		return nil, err
	}
	th, err := newHash(diffID)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	s := &layerStream{blob: &hashingReader{r: rc, h: bh}, closers: []io.Closer{rc}, digest: digest, diffID: diffID, size: size}
	s.buf = bufio.NewReader(s.blob)
	s.tar = &hashingReader{h: th}
	return s, nil
}

// decompress starts the uncompressed stream, choosing the codec by the
// blob's magic bytes as container runtimes do.
func (s *layerStream) decompress() (io.Reader, error) {
	magic, _ := s.buf.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(s.buf)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, zr)
		s.tar.r = zr
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(s.buf, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, err
		}
		s.zstd = zr
		s.tar.r = zr
	default:
		s.tar.r = s.buf
	}
	return s.tar, nil
}

// close releases the stream.
func (s *layerStream) close() {
	if s.zstd != nil {
		s.zstd.Close()
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i].Close()
	}
}

// fetchErr is the registry's error, when reading the blob failed in the
// registry's transport rather than on its content.
func (s *layerStream) fetchErr() error {
	if s.blob.err == nil || s.blob.err == io.EOF {
		return nil
	}
	if s.size >= 0 && s.blob.n == s.size && !s.blob.matches(s.digest) {
		// The whole blob arrived: go-containerregistry's own check
		// refused its content at the end.
		return nil
	}
	return s.blob.err
}

// finish reads the rest of both streams and compares their digests. It
// returns a registry error if the blob could not be fetched, an error
// wrapping ErrDigestMismatch if the content is not what the image says,
// or decodeErr (the tar reader's failure) made an ErrDigestMismatch.
func (s *layerStream) finish(decodeErr error) error {
	var restErr error
	if s.tar.r != nil {
		_, restErr = io.Copy(io.Discard, s.tar)
	}
	io.Copy(io.Discard, s.buf)
	if err := s.fetchErr(); err != nil {
		return err
	}
	if s.size >= 0 && s.blob.n != s.size {
		return corrupt("the blob has %d bytes, the manifest says %d", s.blob.n, s.size)
	}
	if !s.blob.matches(s.digest) {
		return corrupt("the blob's digest is %s, the manifest says %s", s.blob.sum(s.digest), s.digest)
	}
	if decodeErr == nil {
		decodeErr = restErr
	}
	if decodeErr != nil {
		return corrupt("the blob matches its digest but is not a readable layer: %v", decodeErr)
	}
	if !s.tar.matches(s.diffID) {
		return corrupt("the uncompressed layer's digest is %s, the image config's diff ID is %s", s.tar.sum(s.diffID), s.diffID)
	}
	return nil
}

// hashingReader hashes what it reads and keeps the first error.
type hashingReader struct {
	r   io.Reader
	h   hash.Hash
	n   int64
	err error
}

func (h *hashingReader) Read(p []byte) (int, error) {
	if h.err != nil {
		return 0, h.err
	}
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	if err != nil {
		h.err = err
	}
	return n, err
}

func (h *hashingReader) sum(want v1.Hash) string {
	return want.Algorithm + ":" + hex.EncodeToString(h.h.Sum(nil))
}

func (h *hashingReader) matches(want v1.Hash) bool { return h.sum(want) == want.String() }

// newHash returns the hasher for a digest's algorithm.
func newHash(d v1.Hash) (hash.Hash, error) {
	switch d.Algorithm {
	case "sha256":
		return sha256.New(), nil
	case "sha512":
		return sha512.New(), nil
	}
	return nil, corrupt("digest %s uses an unsupported algorithm", d)
}

// errLayer names a layer in an error.
func errLayer(i int, l v1.Layer, err error) error {
	d, derr := l.Digest()
	if derr != nil {
		return fmt.Errorf("layer %d: %w", i, err)
	}
	return fmt.Errorf("layer %d (%s): %w", i, d, err)
}

// isExtractError reports whether err already carries an extraction
// reason (and so is not the registry's).
func isExtractError(err error) bool {
	var e *extractError
	return errors.As(err, &e)
}
