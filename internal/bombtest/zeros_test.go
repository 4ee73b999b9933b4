package bombtest

import (
	"bytes"
	"compress/gzip"
	"io"
	"testing"

	"github.com/ulikunitz/xz"
)

// TestZerosDecode: the repeated-unit bombs decode, with the standard
// readers, to exactly n zero bytes.
func TestZerosDecode(t *testing.T) {
	for _, n := range []int64{0, 1, zerosUnit, 2*zerosUnit + 5} {
		gr, err := gzip.NewReader(bytes.NewReader(GzipZeros(n)))
		if err != nil {
			t.Fatal(err)
		}
		xr, err := xz.NewReader(bytes.NewReader(XZZeros(n)))
		if err != nil {
			t.Fatal(err)
		}
		for name, r := range map[string]io.Reader{"gzip": gr, "xz": xr} {
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("%s %d: %v", name, n, err)
			}
			if int64(len(got)) != n || bytes.Count(got, []byte{0}) != len(got) {
				t.Errorf("%s %d: decoded %d bytes, not %d zero bytes", name, n, len(got), n)
			}
		}
	}
}
