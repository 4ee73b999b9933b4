package node

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseProcModules(t *testing.T) {
	got, err := parseProcModules([]byte("feas_hello 16384 0 - Live 0xffffffffc02ac000 (OE)\ncrc7 16384 2 a,b, Live 0x0\nbad\n"))
	require.NoError(t, err)
	assert.Equal(t, LoadedModule{Name: "feas_hello"}, got["feas_hello"])
	assert.Equal(t, LoadedModule{Name: "crc7", RefCount: 2, UsedBy: []string{"a", "b"}}, got["crc7"])
	assert.Len(t, got, 2)
	_, err = readProcModules(t.TempDir())
	assert.True(t, errors.Is(err, errNoModuleSupport))
}
