package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestQuickstart runs the README's first command in-process.
func TestQuickstart(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), nil, &out))
	s := out.String()
	assert.Contains(t, s, "the image for 6.1.0-57-amd64 is missing")
	assert.Regexp(t, regexp.MustCompile(`event on the Module: Normal ImageBuilt built and pushed 127\.0\.0\.1:\d+/acme/nic:6\.1\.0-57-amd64`), s)
	assert.Regexp(t, regexp.MustCompile(`6\.1\.0-57-amd64\s+127\.0\.0\.1:\d+/acme/nic:6\.1\.0-57-amd64\s+built in pass 1\s+Ready\s+1\s+sha256:`), s)
	assert.Regexp(t, regexp.MustCompile(`6\.1\.0-56-amd64\s+127\.0\.0\.1:\d+/acme/nic:6\.1\.0-56-amd64\s+published before\s+Ready\s+2`), s)
	assert.Regexp(t, regexp.MustCompile(`worker-d\s+6\.1\.0-57-amd64\s+loaded from 127\.0\.0\.1:\d+/acme/nic:6\.1\.0-57-amd64\s+true`), s)
	assert.Regexp(t, regexp.MustCompile(`gpu-less\s+6\.1\.0-56-amd64\s+not selected\s+false`), s)
	assert.Contains(t, s, "nodes: 4 match the selector, 4 desired, 4 available")
	assert.Contains(t, s, "Loaded=True (AllNodesLoaded)")
	assert.Contains(t, s, "Degraded=False")
}
