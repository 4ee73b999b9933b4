package builder

import (
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestTailBuffer: the last bytes are kept, whatever the writes' sizes, and
// concurrent writers (run with -race) lose nothing of the tail's length.
func TestTailBuffer(t *testing.T) {
	b := NewTailBuffer(8)
	n, err := b.Write([]byte("abc"))
	assert.NoError(t, err)
	assert.Equal(t, 3, n)
	b.Write([]byte("defgh"))
	assert.Equal(t, "abcdefgh", b.String())
	b.Write([]byte("ij"))
	assert.Equal(t, "cdefghij", b.String())
	n, _ = b.Write([]byte("0123456789xyz"))
	assert.Equal(t, 13, n, "a write reports all its bytes taken")
	assert.Equal(t, "56789xyz", b.String())

	c := NewTailBuffer(1 << 10)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				c.Write([]byte("line\n"))
			}
		}()
	}
	wg.Wait()
	assert.Len(t, c.String(), 1<<10)
	assert.Equal(t, strings.Repeat("line\n", 20), LogTail(c.String(), 20)+"\n")
}
