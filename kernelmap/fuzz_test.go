package kernelmap

import (
	"errors"
	"testing"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// FuzzResolve feeds arbitrary kernels, patterns and image templates to the
// mapper: it must never panic or hang, and its outcome must be one of the
// documented ones.
func FuzzResolve(f *testing.F) {
	f.Add("6.1.0-56-amd64", `^6\.1\.`, "6.1.0-56-amd64", "r.io/m:${KERNEL_FULL_VERSION}")
	f.Add("6.8.0-1+", `(`, "", "r.io/m:$KERNEL_X")
	f.Add("", "", "", "")
	f.Add("5.14.0-284.el9.x86_64", `.*`, "x", "r.io/${MOD_NAME}:${KERNEL_XYZ:-a}")
	f.Add("6.1", `[[:alpha:]]+`, "6.1", "${")
	f.Add("\xff\x00+", `\p{Greek}`, "\xff\x00", "$$${}")
	f.Fuzz(func(t *testing.T, kernel, pattern, literal, image string) {
		mod := testModule()
		mod.Spec.ModuleLoader.Container.ContainerImage = image
		mod.Spec.ModuleLoader.Container.KernelMappings = []v1beta1.KernelMapping{
			{Literal: literal},
			{Regexp: pattern},
		}
		m := newMapper(t, WithRegexpCacheSize(8))
		rec, err := m.Resolve(mod, kernel)
		var fe *FieldError
		switch {
		case err == nil:
			if rec == nil || rec.Image() == "" {
				t.Fatalf("success without an image for kernel %q", kernel)
			}
			if _, err := rec.MarshalJSON(); err != nil {
				t.Fatalf("record does not marshal: %v", err)
			}
			if len(rec.Kernel().DNSName()) > 63 {
				t.Fatalf("DNS name longer than 63: %q", rec.Kernel().DNSName())
			}
		case errors.Is(err, ErrNoMapping):
		case errors.As(err, &fe):
			if fe.Field == "" {
				t.Fatalf("field error without a field: %v", err)
			}
		default:
			t.Fatalf("undocumented outcome %T: %v", err, err)
		}
	})
}
