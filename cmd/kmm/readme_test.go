package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readmeSection returns the README's section under a "## " heading.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	text := string(data)
	start := strings.Index(text, "\n## "+heading+"\n")
	require.NotEqual(t, -1, start, "the README has a section %q", heading)
	section := text[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	return section
}

// TestReadmeCommandTable: the README's table of commands has a row for
// every command, and no row for one that does not exist.
func TestReadmeCommandTable(t *testing.T) {
	section := readmeSection(t, "The command line")
	rows := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `kmm ") {
			continue
		}
		name := strings.Fields(strings.TrimPrefix(line, "| `kmm "))[0]
		name = strings.TrimSuffix(name, "`,")
		name = strings.TrimSuffix(name, "`")
		rows[name] = true
		cells := strings.Split(strings.ReplaceAll(line, `\|`, "/"), "|")
		require.Len(t, cells, 5, line)
		assert.Contains(t, cells[3], "0", "the exit status column of %s", name)
	}
	for _, c := range commands() {
		assert.True(t, rows[c.name], "the README lists kmm %s", c.name)
		delete(rows, c.name)
	}
	delete(rows, "help")
	assert.Empty(t, rows, "the README lists commands kmm does not have")
}

// TestReadmeValidateExample runs the README's kmm validate example and
// compares what it prints.
func TestReadmeValidateExample(t *testing.T) {
	section := readmeSection(t, "The command line")
	const prompt = "$ kmm validate -f drivers.yaml\n"
	start := strings.Index(section, prompt)
	require.NotEqual(t, -1, start)
	want := section[start+len(prompt):]
	want = want[:strings.Index(want, "```")]
	code, out, stderr := runCmd(t, "", "validate", "-f", "testdata/drivers.yaml")
	assert.Equal(t, exitNo, code, stderr)
	assert.Equal(t, want, out)
}
