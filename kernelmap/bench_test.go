package kernelmap

import (
	"fmt"
	"testing"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// benchModule has 100 mappings: 50 literals and 50 anchored regexps, none
// of which match the kernels of benchKernels except the last catch-all.
func benchModule() *v1beta1.Module {
	mod := testModule()
	var mappings []v1beta1.KernelMapping
	for i := range 50 {
		mappings = append(mappings,
			v1beta1.KernelMapping{Literal: fmt.Sprintf("4.%d.0-1-amd64", i)},
			v1beta1.KernelMapping{Regexp: fmt.Sprintf(`^5\.%d\.0-[0-9]+\.el9_%d\.x86_64$`, i, i)})
	}
	mappings[99] = v1beta1.KernelMapping{Regexp: `^6\.`}
	mod.Spec.ModuleLoader.Container.KernelMappings = mappings
	return mod
}

// benchKernels returns n distinct node kernels.
func benchKernels(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("6.%d.%d-%d-amd64", i%20, i%7, i)
	}
	return out
}

// BenchmarkResolve10kKernels100Mappings maps 10,000 node kernels against a
// Module with 100 mappings, where every kernel matches only the last one.
// One op is the whole fleet.
func BenchmarkResolve10kKernels100Mappings(b *testing.B) {
	mod := benchModule()
	kernels := benchKernels(10000)
	m := newMapper(b)
	b.ReportAllocs()
	for b.Loop() {
		for _, k := range kernels {
			if _, err := m.Resolve(mod, k); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(kernels)), "ns/kernel")
}

// BenchmarkFind10kKernels100Mappings measures matching alone.
func BenchmarkFind10kKernels100Mappings(b *testing.B) {
	mod := benchModule()
	kernels := benchKernels(10000)
	m := newMapper(b)
	for b.Loop() {
		for _, k := range kernels {
			if _, err := m.Find(mod.Spec.ModuleLoader.Container.KernelMappings, k); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(kernels)), "ns/kernel")
}

// BenchmarkFindUncached compiles every regexp on every call, as a mapper
// without a cache would; compare it with BenchmarkFind10kKernels100Mappings.
func BenchmarkFindUncached(b *testing.B) {
	mod := benchModule()
	kernels := benchKernels(1000)
	for b.Loop() {
		for _, k := range kernels {
			if _, err := newMapper(b).Find(mod.Spec.ModuleLoader.Container.KernelMappings, k); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(kernels)), "ns/kernel")
}
