package kernelmap

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"

	"github.com/kmmkit/kmmkit/internal/kvars"
)

// The variables a Module's image templates, unsignedImage and filesToSign
// may use, as $NAME or ${NAME}.
const (
	// VarKernelFullVersion is the normalised kernel version.
	VarKernelFullVersion = kvars.KernelFullVersion
	// VarKernelVersion is the normalised kernel version too.
	VarKernelVersion = kvars.KernelVersion
	// VarKernelXYZ is "X.Y.Z", the first three components.
	VarKernelXYZ = kvars.KernelXYZ
	// VarKernelX is the first component, the major version.
	VarKernelX = kvars.KernelX
	// VarKernelY is the second component, the minor version.
	VarKernelY = kvars.KernelY
	// VarKernelZ is the third component, the patch level.
	VarKernelZ = kvars.KernelZ
	// VarModName is the Module's name.
	VarModName = kvars.ModName
	// VarModNamespace is the Module's namespace.
	VarModNamespace = kvars.ModNamespace
)

// Variables returns every variable name templates may use.
func Variables() []string { return kvars.All() }

// maxDNSLabel is the longest Kubernetes label value and DNS label.
const maxDNSLabel = 63

// componentSeparators split a kernel version into components, as KMM does.
var componentSeparators = regexp.MustCompile(`[.,-]`)

// Kernel is a node's kernel version and the values derived from it.
type Kernel struct {
	// Version is the kernel as the node reports it, with one trailing "+"
	// removed. Mappings match against it.
	Version string
	// Normalized is Version with every character outside [A-Za-z0-9._-]
	// replaced by "_", so it can be part of an image tag. Variables take
	// their values from it.
	Normalized string
	// X, Y and Z are the first three components of Normalized, split at
	// ".", "," and "-".
	X, Y, Z string
}

// TrimKernel returns a node kernel version the way KMM reads
// node.status.nodeInfo.kernelVersion: with one trailing "+" removed.
func TrimKernel(nodeKernel string) string {
	return strings.TrimSuffix(nodeKernel, "+")
}

// ParseKernel parses a node kernel version. It trims one trailing "+" and
// fails when the version has fewer than three components
// (major.minor.patch), because then the KERNEL_X, KERNEL_Y and KERNEL_Z
// variables have no value.
func ParseKernel(nodeKernel string) (Kernel, error) {
	v := TrimKernel(nodeKernel)
	if strings.TrimSpace(v) == "" {
		return Kernel{}, fmt.Errorf("kernel version is empty")
	}
	k := Kernel{Version: v, Normalized: NormalizeKernel(v)}
	parts := componentSeparators.Split(k.Normalized, 4)
	if len(parts) < 3 {
		return Kernel{}, fmt.Errorf("kernel version %q has %d component(s); expected at least three components (major.minor.patch)", nodeKernel, len(parts))
	}
	k.X, k.Y, k.Z = parts[0], parts[1], parts[2]
	if k.X == "" || k.Y == "" || k.Z == "" {
		return Kernel{}, fmt.Errorf("kernel version %q has an empty major, minor or patch component", nodeKernel)
	}
	return k, nil
}

// NormalizeKernel replaces every character of v outside [A-Za-z0-9._-] by
// "_", as KMM does before using a kernel in an image tag. A multi-byte
// character, or each byte of invalid UTF-8, becomes one "_".
func NormalizeKernel(v string) string {
	var b strings.Builder
	b.Grow(len(v))
	for _, r := range v {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '_' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// XYZ returns "X.Y.Z".
func (k Kernel) XYZ() string { return k.X + "." + k.Y + "." + k.Z }

// Tag returns the kernel as it may appear in an image tag: the normalised
// version.
func (k Kernel) Tag() string { return k.Normalized }

// DNSName returns the kernel as a DNS label and label value, the form KMM
// uses in build Pod names and the target-kernel label: lower case, "_" and
// "." turned into "-", leading and trailing "-" trimmed. KMM stops there;
// kmmkit also keeps the result within 63 characters by cutting a longer one
// and ending it with 10 hex digits of its SHA-256, so it is always a valid
// label value.
func (k Kernel) DNSName() string {
	s := strings.ToLower(k.Normalized)
	s = strings.NewReplacer("_", "-", ".", "-").Replace(s)
	s = strings.Trim(s, "-")
	if len(s) <= maxDNSLabel {
		return s
	}
	sum := sha256.Sum256([]byte(k.Normalized))
	suffix := hex.EncodeToString(sum[:5])
	return strings.TrimRight(s[:maxDNSLabel-len(suffix)-1], "-") + "-" + suffix
}

// Vars returns the value of every variable for this kernel and the given
// module.
func (k Kernel) Vars(moduleName, namespace string) map[string]string {
	return map[string]string{
		VarKernelFullVersion: k.Normalized,
		VarKernelVersion:     k.Normalized,
		VarKernelXYZ:         k.XYZ(),
		VarKernelX:           k.X,
		VarKernelY:           k.Y,
		VarKernelZ:           k.Z,
		VarModName:           moduleName,
		VarModNamespace:      namespace,
	}
}
