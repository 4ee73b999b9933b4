package bounded

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ca.crt")
	require.NoError(t, os.WriteFile(file, []byte("12345"), 0o600))
	data, err := ReadFile(file, 5)
	require.NoError(t, err)
	assert.Equal(t, "12345", string(data))
	_, err = ReadFile(file, 4)
	assert.EqualError(t, err, file+": larger than 4 bytes")
	_, err = ReadFile(filepath.Join(t.TempDir(), "missing"), 4)
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = ReadFile(t.TempDir(), 4)
	assert.ErrorContains(t, err, "reading ")
}
