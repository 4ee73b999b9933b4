// Package bounded reads files whole, up to a limit, so that a file given
// by a user or mounted from a Secret never makes a read unbounded.
package bounded

import (
	"fmt"
	"io"
	"os"
)

// ReadFile reads the whole of file when it holds at most limit bytes; a
// larger file is an error naming it and the limit.
func ReadFile(file string, limit int64) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", file, limit)
	}
	return data, nil
}
