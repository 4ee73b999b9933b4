package modfile

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/bombtest"
)

// TestXZReaderPool checks that xz readers, with their dictionaries, serve
// file after file, except one that needed a dictionary over 8 MiB, which
// is let go rather than kept for the rest of the run.
func TestXZReaderPool(t *testing.T) {
	dec, err := NewDecompressor(0)
	require.NoError(t, err)
	defer dec.Close()
	small := bombtest.XZ(sample().Bytes())       // 1 MiB dictionary
	big := bombtest.XZDict(24, sample().Bytes()) // 16 MiB
	for _, data := range [][]byte{small, big} {
		out, _, err := dec.Decompress(data)
		require.NoError(t, err)
		require.Equal(t, sample().Bytes(), out)
	}
	// Under -race, the pool drops a quarter of the readers it is given.
	bound := uint64(3 << 20)
	if raceEnabled {
		bound = 9 << 20
	}
	n := allocated(func() {
		for range 10 {
			_, _, err = dec.Decompress(small)
		}
	})
	require.NoError(t, err)
	assert.Less(t, n, bound, "10 files with a 1 MiB dictionary allocated %d bytes", n)
	n = allocated(func() {
		for range 3 {
			_, _, err = dec.Decompress(big)
		}
	})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, n, uint64(3*16<<20), "each 16 MiB dictionary is new")
}
