package sign_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/builder/sign"
	"github.com/kmmkit/kmmkit/builder/signfile"
	"github.com/kmmkit/kmmkit/internal/bombtest"
)

// zeroLayerImage is an image of one gzip layer holding, for each name, a
// file of that many zero bytes: a few hundred KiB for a GiB. The layer is
// gzip members one after another (each header, the zeros as
// bombtest.GzipZeros makes them, the tar's end), so a GiB costs one small
// compression.
func zeroLayerImage(t *testing.T, files map[string]int64) *bytes.Reader {
	t.Helper()
	gz := func(data []byte) []byte {
		var b bytes.Buffer
		gw, err := gzip.NewWriterLevel(&b, gzip.BestSpeed)
		require.NoError(t, err)
		_, err = gw.Write(data)
		require.NoError(t, err)
		require.NoError(t, gw.Close())
		return b.Bytes()
	}
	var layer []byte
	for name, size := range files {
		var hdr bytes.Buffer
		// A fresh writer per header: only the 512-byte header is taken.
		require.NoError(t, tar.NewWriter(&hdr).WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644}))
		layer = append(layer, gz(hdr.Bytes())...)
		layer = append(layer, bombtest.GzipZeros(size)...)
		if pad := (512 - size%512) % 512; pad > 0 {
			layer = append(layer, gz(make([]byte, pad))...)
		}
	}
	layer = append(layer, gz(make([]byte, 1024))...) // the tar's two zero blocks
	return bytes.NewReader(layer)
}

// TestSignImageBombs signs images whose small compressed layers expand to
// huge modules: a 1 GiB module (from a 1.3 MB layer; reading it whole
// took 3.7 GiB) is refused by its size before it is read, naming it and
// the limit; a 256 MiB one is signed with the peak resident set growing
// by far less than the module, and its signature is that of its bytes.
func TestSignImageBombs(t *testing.T) {
	key, cert := keyPair(t)
	signer, err := signfile.ParseSigner(crypto.SHA256, key, cert)
	require.NoError(t, err)
	image := func(blob *bytes.Reader) v1.Image {
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(io.NewSectionReader(blob, 0, blob.Size())), nil
		})
		require.NoError(t, err)
		img, err := mutate.AppendLayers(empty.Image, layer)
		require.NoError(t, err)
		return img
	}

	huge := image(zeroLayerImage(t, map[string]int64{"opt/lib/modules/k/huge.ko": 1 << 30}))
	_, err = sign.SignImage(huge, []string{"/opt/lib/modules/k/*.ko"}, signer)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "signing /opt/lib/modules/k/huge.ko: 1073741824 bytes, over the limit of 536870912 bytes for a module")

	const size = 256 << 20
	big := image(zeroLayerImage(t, map[string]int64{"opt/lib/modules/k/big.ko": size, "opt/lib/modules/k/small.ko": 10}))
	var signed sign.Signed
	rss, ok := bombtest.PeakRSS(func() {
		signed, err = sign.SignImage(big, []string{"/opt/lib/modules/k/*.ko"}, signer)
	})
	require.NoError(t, err)
	defer signed.Close()
	if ok {
		assert.Less(t, rss, uint64(64<<20), "peak RSS grew by %d bytes for a %d-byte module", rss, size)
	}
	assert.Equal(t, []string{"/opt/lib/modules/k/big.ko", "/opt/lib/modules/k/small.ko"}, signed.Paths)

	layers, err := signed.Image.Layers()
	require.NoError(t, err)
	rc, err := layers[len(layers)-1].Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	tr := tar.NewReader(rc)
	h, err := tr.Next()
	require.NoError(t, err)
	assert.Equal(t, "opt/lib/modules/k/big.ko", h.Name)
	sig, err := signer.SignatureFrom(io.LimitReader(bombtest.Zeros{}, size))
	require.NoError(t, err)
	tail := signfile.Appendix(sig)
	assert.Equal(t, int64(size+len(tail)), h.Size)
	n, err := io.CopyN(io.Discard, tr, size)
	require.NoError(t, err)
	require.Equal(t, int64(size), n)
	got, err := io.ReadAll(tr)
	require.NoError(t, err)
	assert.Equal(t, tail, got, "the signature of the module's bytes")
	h, err = tr.Next()
	require.NoError(t, err)
	assert.Equal(t, "opt/lib/modules/k/small.ko", h.Name)
}
