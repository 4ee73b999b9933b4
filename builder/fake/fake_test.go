package fake_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/fake"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/reason"
)

func req(image string) builder.Request {
	k, _ := kernelmap.ParseKernel("6.1.0-56-amd64")
	return builder.Request{Namespace: "drivers", Module: "nic", Kernel: k, Image: image, Dockerfile: "FROM scratch\n"}
}

func TestBuilder(t *testing.T) {
	ctx := context.Background()
	b := fake.New()
	var pushed []string
	b.OnSucceed(func(r builder.Request) { pushed = append(pushed, r.Image) })
	st, err := b.Sync(ctx, req("r/nic:a"))
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseRunning, st.Phase)
	st, err = b.Sync(ctx, req("r/nic:a"))
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseSucceeded, st.Phase)
	assert.Len(t, st.Digest, 7+64)
	assert.Equal(t, []string{"r/nic:a"}, pushed, "the hook runs once")
	assert.Len(t, b.Started(), 1, "idempotent while running")

	b.Fail("r/nic:b", reason.BuildFailed, "make failed", "Error 2")
	st, err = b.Sync(ctx, req("r/nic:b"))
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseFailed, st.Phase)
	assert.True(t, st.Final)
	assert.Equal(t, "Error 2", st.LogTail)
	assert.Equal(t, reason.BuildFailed, st.Reason)
	b.Recover("r/nic:b")
	b.SetPasses(0)
	st, err = b.Sync(ctx, req("r/nic:b"))
	require.NoError(t, err)
	assert.Equal(t, builder.PhaseSucceeded, st.Phase)

	changed := req("r/nic:a")
	changed.Dockerfile += "RUN true\n"
	_, _ = b.Sync(ctx, changed)
	assert.Len(t, b.Started(), 4, "a retry after Recover and a changed request are new builds")
	st, _ = b.Sync(ctx, changed)
	assert.Equal(t, builder.PhaseSucceeded, st.Phase)
	assert.Len(t, b.Started(), 5, "a finished build is forgotten, as a collected build Pod")

	_, err = b.Sync(ctx, builder.Request{})
	assert.ErrorContains(t, err, "image is empty")
}

// Tests of code that builds images use fake.Builder where production code
// uses a real backend.
func ExampleBuilder() {
	b := fake.New()
	b.SetPasses(0)
	k, _ := kernelmap.ParseKernel("6.1.0-56-amd64")
	st, _ := b.Sync(context.Background(), builder.Request{Namespace: "drivers", Module: "nic", Kernel: k,
		Image: "registry.example.com/nic:6.1.0-56-amd64", Dockerfile: "FROM scratch\n"})
	fmt.Println(st.Name, st.Phase)
	// Output: nic-build-6-1-0-56-amd64 Succeeded
}
