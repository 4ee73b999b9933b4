package ctxlog

import (
	"context"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/stretchr/testify/assert"
)

func TestLogger(t *testing.T) {
	var ctxLines, givenLines strings.Builder
	ctxLog := funcr.New(func(_, args string) { ctxLines.WriteString(args + "\n") }, funcr.Options{})
	given := funcr.New(func(_, args string) { givenLines.WriteString(args + "\n") }, funcr.Options{})
	ctx := logr.NewContext(context.Background(), ctxLog)

	var none Logger
	assert.False(t, none.Set())
	none.From(ctx).Info("to the context")
	none.From(context.Background()).Info("nowhere") // no logger in the context: discarded
	g := Given(given)
	assert.True(t, g.Set())
	g.From(ctx).Info("to the given one")

	assert.Equal(t, "\"level\"=0 \"msg\"=\"to the context\"\n", ctxLines.String())
	assert.Equal(t, "\"level\"=0 \"msg\"=\"to the given one\"\n", givenLines.String())
}
