package kernelmap

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestParseKernel(t *testing.T) {
	tests := []struct {
		in                           string
		version, normalized, x, y, z string
		xyz, dns                     string
	}{
		{"6.1.0-56-amd64", "6.1.0-56-amd64", "6.1.0-56-amd64", "6", "1", "0", "6.1.0", "6-1-0-56-amd64"},
		{"6.0.15-300.fc37.x86_64", "6.0.15-300.fc37.x86_64", "6.0.15-300.fc37.x86_64", "6", "0", "15", "6.0.15", "6-0-15-300-fc37-x86-64"},
		{"5.14.0-570.92.1.el9_6.x86_64", "5.14.0-570.92.1.el9_6.x86_64", "5.14.0-570.92.1.el9_6.x86_64", "5", "14", "0", "5.14.0", "5-14-0-570-92-1-el9-6-x86-64"},
		{"6.8.0-1+", "6.8.0-1", "6.8.0-1", "6", "8", "0", "6.8.0", "6-8-0-1"},
		{"6.8.0-1++", "6.8.0-1+", "6.8.0-1_", "6", "8", "0", "6.8.0", "6-8-0-1"},
		{"6.6.0+rpt-rpi-v8", "6.6.0+rpt-rpi-v8", "6.6.0_rpt-rpi-v8", "6", "6", "0_rpt", "6.6.0_rpt", "6-6-0-rpt-rpi-v8"},
		{"4.18.0,1", "4.18.0,1", "4.18.0_1", "4", "18", "0_1", "4.18.0_1", "4-18-0-1"},
		{"5.15-1-x", "5.15-1-x", "5.15-1-x", "5", "15", "1", "5.15.1", "5-15-1-x"},
		{"6.1.0-56-AMD64", "6.1.0-56-AMD64", "6.1.0-56-AMD64", "6", "1", "0", "6.1.0", "6-1-0-56-amd64"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			k, err := ParseKernel(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.version, k.Version)
			assert.Equal(t, tc.normalized, k.Normalized)
			assert.Equal(t, tc.normalized, k.Tag())
			assert.Equal(t, []string{tc.x, tc.y, tc.z}, []string{k.X, k.Y, k.Z})
			assert.Equal(t, tc.xyz, k.XYZ())
			assert.Equal(t, tc.dns, k.DNSName())
		})
	}
}

func TestParseKernelErrors(t *testing.T) {
	tests := map[string]string{
		"":      "empty",
		"+":     "empty",
		"   ":   "empty",
		"6":     "expected at least three components",
		"6.1":   "expected at least three components",
		"6.1+":  "expected at least three components",
		"6..1":  "empty major, minor or patch",
		".6.1":  "empty major, minor or patch",
		"6.1.":  "empty major, minor or patch",
		"6-1":   "expected at least three components",
		"linux": "expected at least three components",
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			_, err := ParseKernel(in)
			require.Error(t, err)
			assert.Contains(t, err.Error(), want)
			if in != "" && strings.TrimSpace(strings.TrimSuffix(in, "+")) != "" {
				assert.Contains(t, err.Error(), in, "the error names the kernel")
			}
		})
	}
}

func TestDNSNameLongKernel(t *testing.T) {
	long := "6.1.0-56-" + strings.Repeat("verylongflavour.", 6) + "x86_64"
	other := "6.1.0-56-" + strings.Repeat("verylongflavour.", 6) + "aarch64"
	k1, err := ParseKernel(long)
	require.NoError(t, err)
	k2, err := ParseKernel(other)
	require.NoError(t, err)
	n1, n2 := k1.DNSName(), k2.DNSName()
	assert.LessOrEqual(t, len(n1), 63)
	assert.Empty(t, validation.IsDNS1123Label(n1))
	assert.Empty(t, validation.IsValidLabelValue(n1))
	assert.NotEqual(t, n1, n2, "two long kernels sharing a prefix keep distinct names")
	assert.Equal(t, n1, k1.DNSName(), "the name is stable")
}

func TestNormalizeKernel(t *testing.T) {
	assert.Equal(t, "a_b_c.d-e_f", NormalizeKernel("a+b c.d-e_f"))
	assert.Equal(t, "_____", NormalizeKernel("+~/:@"))
	assert.Equal(t, "6.1.0__", NormalizeKernel("6.1.0\xffé"))
}

func TestVars(t *testing.T) {
	k, err := ParseKernel("6.0.15-300.fc37.x86_64")
	require.NoError(t, err)
	vars := k.Vars("mymod", "myns")
	assert.Equal(t, map[string]string{
		"KERNEL_FULL_VERSION": "6.0.15-300.fc37.x86_64",
		"KERNEL_VERSION":      "6.0.15-300.fc37.x86_64",
		"KERNEL_XYZ":          "6.0.15",
		"KERNEL_X":            "6",
		"KERNEL_Y":            "0",
		"KERNEL_Z":            "15",
		"MOD_NAME":            "mymod",
		"MOD_NAMESPACE":       "myns",
	}, vars)
	assert.ElementsMatch(t, Variables(), keys(vars))
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
