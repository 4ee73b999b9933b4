//go:build unix && !linux

package modfile

// remap grows a mapping from mapAnon to n bytes, keeping its contents.
func remap(b []byte, n int) ([]byte, error) {
	m, err := mapAnon(n)
	if err != nil {
		return nil, err
	}
	copy(m, b)
	unmap(b)
	return m[:len(b)], nil
}
