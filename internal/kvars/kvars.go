// Package kvars names the variables that Module templates may use. It is
// shared by the API validation and the kernel mapper, which re-exports the
// names.
package kvars

// The variable names, as KMM defines them.
const (
	KernelFullVersion = "KERNEL_FULL_VERSION"
	KernelVersion     = "KERNEL_VERSION"
	KernelXYZ         = "KERNEL_XYZ"
	KernelX           = "KERNEL_X"
	KernelY           = "KERNEL_Y"
	KernelZ           = "KERNEL_Z"
	ModName           = "MOD_NAME"
	ModNamespace      = "MOD_NAMESPACE"
)

// All lists every variable name.
func All() []string {
	return []string{KernelFullVersion, KernelVersion, KernelXYZ, KernelX, KernelY, KernelZ, ModName, ModNamespace}
}

// Known reports whether name is a variable templates may use.
func Known(name string) bool {
	switch name {
	case KernelFullVersion, KernelVersion, KernelXYZ, KernelX, KernelY, KernelZ, ModName, ModNamespace:
		return true
	}
	return false
}
