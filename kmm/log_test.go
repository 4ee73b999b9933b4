package kmm_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/kmm"
)

// logLines collects JSON log lines at V(1).
type logLines struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (l *logLines) logger() logr.Logger {
	return funcr.NewJSON(func(obj string) {
		var m map[string]any
		if err := json.Unmarshal([]byte(obj), &m); err == nil {
			l.mu.Lock()
			l.lines = append(l.lines, m)
			l.mu.Unlock()
		}
	}, funcr.Options{Verbosity: 1})
}

// find returns the first line with msg whose keys hold every given value.
func (l *logLines) find(msg string, kv ...any) map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, m := range l.lines {
		if m["msg"] != msg {
			continue
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if m[kv[i].(string)] != kv[i+1] {
				continue next
			}
		}
		return m
	}
	return nil
}

// TestLogsFromContext: without WithLogger, a pass logs to the context's
// logger, its decisions at V(1) with the object's keys.
func TestLogsFromContext(t *testing.T) {
	var logs logLines
	ctx := logr.NewContext(context.Background(), logs.logger())
	h := cluster(t)
	mod := nicModule()
	mod.Spec.ModuleLoader.Container.KernelMappings[0].Literal = k56
	mod.Spec.ModuleLoader.Container.KernelMappings[0].Regexp = ""
	mod.Spec.ModuleLoader.Container.KernelMappings = append(mod.Spec.ModuleLoader.Container.KernelMappings, mod.Spec.ModuleLoader.Container.KernelMappings[0])
	mod.Spec.ModuleLoader.Container.KernelMappings[1].Literal = k58
	require.NoError(t, h.CreateModule(ctx, mod))
	require.NoError(t, h.SetKernel(ctx, "n2", k58))
	_, err := h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)

	obj := []any{"namespace", "drivers", "name", "nic"}
	with := func(kv ...any) []any { return append(append([]any{}, obj...), kv...) }
	assert.NotNil(t, logs.find("targeted nodes", with("nodes", 3.0, "kernels", 3.0)...))
	assert.NotNil(t, logs.find("mapped kernel", with("kernel", k56, "image", "registry.example.com/nic:"+k56, "nodes", 1.0)...))
	assert.NotNil(t, logs.find("no kernel mapping", with("kernel", k57, "nodes", 1.0)...))
	assert.NotNil(t, logs.find("image exists", with("kernel", k56, "image", "registry.example.com/nic:"+k56, "digest", "sha256:56")...))
	assert.NotNil(t, logs.find("image does not exist", with("kernel", k58, "image", "registry.example.com/nic:"+k58)...))
	assert.NotNil(t, logs.find("build synced", with("kernel", k58, "image", "registry.example.com/nic:"+k58, "phase", "Running")...))
	assert.NotNil(t, logs.find("synced nodes", with("desired", 3.0, "available", 1.0, "loading", 1.0)...))
	for _, l := range logs.lines {
		assert.Equal(t, 1.0, l["level"], "decisions are logged at V(1): %v", l)
	}

	// An invalid spec says so.
	m, err := h.Module(ctx, "drivers", "nic")
	require.NoError(t, err)
	m.Spec.Selector = nil
	_, err = h.Modules.Update(ctx, m)
	require.NoError(t, err)
	_, err = h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.NotNil(t, logs.find("the spec is invalid: nothing is changed in the cluster", with("errors", 1.0)...))
}

// TestWithLoggerWins: WithLogger's logger is used, not the context's.
func TestWithLoggerWins(t *testing.T) {
	var mine, fromCtx logLines
	ctx := logr.NewContext(context.Background(), fromCtx.logger())
	h := cluster(t, kmm.WithLogger(mine.logger()))
	require.NoError(t, h.CreateModule(ctx, nicModule()))
	_, err := h.Reconcile(ctx, "drivers", "nic")
	require.NoError(t, err)
	assert.NotNil(t, mine.find("mapped kernel", "kernel", k56))
	assert.Empty(t, fromCtx.lines)
}
