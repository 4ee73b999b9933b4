package kernelmap

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
	"github.com/hashicorp/go-multierror"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

func lit(s string) v1beta1.KernelMapping {
	return v1beta1.KernelMapping{Literal: s, ContainerImage: "img:" + s}
}
func re(s string) v1beta1.KernelMapping {
	return v1beta1.KernelMapping{Regexp: s, ContainerImage: "img:re"}
}

func TestFind(t *testing.T) {
	tests := []struct {
		name     string
		mappings []v1beta1.KernelMapping
		kernel   string
		want     int
	}{
		{"literal exact", []v1beta1.KernelMapping{lit("6.1.0-56-amd64")}, "6.1.0-56-amd64", 0},
		{"literal is not a prefix match", []v1beta1.KernelMapping{lit("6.1.0")}, "6.1.0-56-amd64", -1},
		{"literal is case sensitive", []v1beta1.KernelMapping{lit("6.1.0-56-AMD64")}, "6.1.0-56-amd64", -1},
		{"literal after trimming plus", []v1beta1.KernelMapping{lit("6.8.0-1")}, "6.8.0-1+", 0},
		{"only one plus is trimmed", []v1beta1.KernelMapping{lit("6.8.0-1")}, "6.8.0-1++", -1},
		{"literal with plus never matches a trimmed kernel", []v1beta1.KernelMapping{lit("6.8.0-1+")}, "6.8.0-1+", -1},
		{"regexp is unanchored", []v1beta1.KernelMapping{re(`56`)}, "6.1.0-56-amd64", 0},
		{"regexp dot matches any char", []v1beta1.KernelMapping{re(`6.1.0`)}, "6x1y0", 0},
		{"anchored regexp", []v1beta1.KernelMapping{re(`^6\.1\.0-\d+-amd64$`)}, "6.1.0-56-amd64", 0},
		{"anchored regexp rejects suffix", []v1beta1.KernelMapping{re(`^6\.1\.0-\d+-amd64$`)}, "6.1.0-56-amd64-dbg", -1},
		{"regexp sees the trimmed kernel", []v1beta1.KernelMapping{re(`\+$`)}, "6.8.0-1+", -1},
		{"first match wins", []v1beta1.KernelMapping{re(`^6\.`), lit("6.1.0-56-amd64")}, "6.1.0-56-amd64", 0},
		{"list order, literal after non-matching regexp", []v1beta1.KernelMapping{re(`^5\.`), lit("6.1.0-56-amd64"), re(`.*`)}, "6.1.0-56-amd64", 1},
		{"catch-all last", []v1beta1.KernelMapping{lit("6.1.0-56-amd64"), re(`.*`)}, "5.14.0-284.el9.x86_64", 1},
		{"no mapping", []v1beta1.KernelMapping{lit("6.1.0-56-amd64"), re(`^5\.`)}, "6.2.0-1", -1},
		{"empty list", nil, "6.1.0-56-amd64", -1},
		{"mapping with neither field never matches", []v1beta1.KernelMapping{{ContainerImage: "x:y"}}, "6.1.0-56-amd64", -1},
		{"empty regexp matches nothing", []v1beta1.KernelMapping{re(``)}, "6.1.0-56-amd64", -1},
		{"literal checked before regexp in one mapping", []v1beta1.KernelMapping{{Literal: "6.1.0-56-amd64", Regexp: "("}}, "6.1.0-56-amd64", 0},
	}
	m := newMapper(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.Find(tc.mappings, tc.kernel)
			if tc.want < 0 {
				assert.ErrorIs(t, err, ErrNoMapping)
				assert.Equal(t, -1, got)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestFindBadRegexp(t *testing.T) {
	m := newMapper(t)
	mappings := []v1beta1.KernelMapping{lit("5.0.0"), re(`^6\.(1`)}
	for range 2 { // the second call answers from the cache
		_, err := m.Find(mappings, "6.1.0-56-amd64")
		var fe *FieldError
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, "spec.moduleLoader.container.kernelMappings[1].regexp", fe.Field)
		assert.Equal(t, `^6\.(1`, fe.Value)
		assert.Contains(t, err.Error(), "invalid regexp")
		assert.NotErrorIs(t, err, ErrNoMapping, "a broken regexp is a failure, not 'no mapping'")
	}
	// A literal before the broken mapping still matches: KMM stops at the
	// first match.
	got, err := m.Find(mappings, "5.0.0")
	require.NoError(t, err)
	assert.Equal(t, 0, got)
}

// newMapper is New that fails tb on an error.
func newMapper(tb testing.TB, opts ...Option) *Mapper {
	tb.Helper()
	m, err := New(opts...)
	require.NoError(tb, err)
	return m
}

func TestRegexpCacheBounded(t *testing.T) {
	m := newMapper(t, WithRegexpCacheSize(3))
	for i := range 50 {
		idx, err := m.Find([]v1beta1.KernelMapping{re(fmt.Sprintf(`^6\.%d\.`, i))}, fmt.Sprintf("6.%d.0", i))
		require.NoError(t, err)
		assert.Equal(t, 0, idx)
		m.mu.Lock()
		n := len(m.regexps)
		m.mu.Unlock()
		assert.LessOrEqual(t, n, 3)
	}
	for _, n := range []int{0, -5} {
		_, err := New(WithRegexpCacheSize(n))
		assert.EqualError(t, err, fmt.Sprintf("kernelmap: WithRegexpCacheSize(%d): keep at least one regexp", n))
	}
	one := newMapper(t, WithRegexpCacheSize(1))
	for _, k := range []string{"6.1.0", "6.2.0"} {
		_, err := one.Find([]v1beta1.KernelMapping{re(`^` + k[:3])}, k)
		require.NoError(t, err)
		assert.Len(t, one.regexps, 1)
	}
}

func TestRegexpCompiledOnce(t *testing.T) {
	m := newMapper(t)
	mappings := []v1beta1.KernelMapping{re(`^6\.`)}
	_, err := m.Find(mappings, "6.1.0")
	require.NoError(t, err)
	first := m.regexps[`^6\.`].re
	_, err = m.Find(mappings, "6.2.0")
	require.NoError(t, err)
	assert.Same(t, first, m.regexps[`^6\.`].re)
}

func TestConcurrentResolve(t *testing.T) {
	m := newMapper(t, WithRegexpCacheSize(4))
	mod := testModule()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				k := fmt.Sprintf("6.%d.%d-1-amd64", g, i)
				rec, err := m.Resolve(mod, k)
				if err != nil {
					errs <- err
					return
				}
				if rec.Kernel().Version != k {
					errs <- errors.New("wrong kernel " + rec.Kernel().Version)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestResolveAll(t *testing.T) {
	mod := testModule()
	mod.Spec.ModuleLoader.Container.KernelMappings = []v1beta1.KernelMapping{
		{Literal: "6.1"},      // matches, but has too few components
		{Regexp: `^6\.1\.0-`}, // Debian
		{Regexp: `^6\.2\.`, ContainerImage: "r.io/m:${BAD}"}, // broken template
	}
	kernels := []string{"6.1.0-56-amd64", "6.2.0-1", "5.14.0-284.el9.x86_64", "6.1", "6.1.0-56-amd64", "4.19.0-1"}
	res, err := newMapper(t).ResolveAll(mod, kernels)
	require.Error(t, err)
	var merr *multierror.Error
	require.ErrorAs(t, err, &merr)
	require.Len(t, merr.Errors, 2)
	assert.Contains(t, merr.Errors[0].Error(), `kernel "6.1": node.status.nodeInfo.kernelVersion`)
	assert.Contains(t, merr.Errors[1].Error(), `kernel "6.2.0-1": spec.moduleLoader.container.kernelMappings[2].containerImage`)
	var fe *FieldError
	assert.ErrorAs(t, merr.Errors[1], &fe, "per-kernel errors keep their type")

	require.Len(t, res.Records, 1, "the duplicate kernel is resolved once")
	assert.Equal(t, "quay.io/org/mymod:6.1.0-56-amd64", res.Records["6.1.0-56-amd64"].Image())
	assert.Equal(t, []string{"4.19.0-1", "5.14.0-284.el9.x86_64"}, res.Unmapped)
	assert.Len(t, res.Failed, 2)

	ok, err := newMapper(t).ResolveAll(testModule(), []string{"6.1.0-1-amd64", "6.2.0-1-amd64"})
	require.NoError(t, err)
	assert.Len(t, ok.Records, 2)
	assert.Empty(t, ok.Unmapped)

	mod.Spec.ModuleLoader = nil
	_, err = newMapper(t).ResolveAll(mod, kernels)
	assert.ErrorIs(t, err, ErrNoModuleLoader)
}

func TestWithLogger(t *testing.T) {
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: 2})
	m := newMapper(t, WithLogger(log))
	mod := testModule()
	_, err := m.Resolve(mod, "6.1.0-1-amd64")
	require.NoError(t, err)
	mod.Spec.ModuleLoader.Container.KernelMappings[0].Regexp = "^5"
	_, err = m.Resolve(mod, "6.1.0-1-amd64")
	require.ErrorIs(t, err, ErrNoMapping)
	require.Len(t, lines, 2)
	assert.Contains(t, lines[0], `"msg"="kernel mapping matched"`)
	assert.Contains(t, lines[0], `"mapping"=0`)
	assert.Contains(t, lines[1], `"msg"="no kernel mapping matches"`)
}
