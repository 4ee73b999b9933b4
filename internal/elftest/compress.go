package elftest

import (
	"bytes"

	"github.com/ulikunitz/xz"
)

// XZ compresses a module file as distributions ship them (.ko.xz).
func XZ(data []byte) ([]byte, error) {
	var b bytes.Buffer
	w, err := xz.NewWriter(&b)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
