package v1beta1

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestModprobeArgsAsKMMsWorker(t *testing.T) {
	m := ModprobeSpec{ModuleName: "nic", DirName: "/mods", Parameters: []string{"a=1", "b"},
		Args: &ModprobeArgs{Load: []string{"--first-time"}, Unload: []string{"-q"}}}
	assert.Equal(t, []string{"-vd", "/tmp/mods", "--first-time", "nic", "a=1", "b"}, m.LoadArgs())
	assert.Equal(t, []string{"-rvd", "/tmp/mods", "-q", "nic"}, m.UnloadArgs())

	m = ModprobeSpec{ModuleName: "nic", ModulesLoadingOrder: []string{"nic", "dep1", "dep2"}}
	assert.Equal(t, []string{"-vd", "/tmp/opt", "nic"}, m.LoadArgs(), "an empty dirName is KMM's default /opt")
	assert.Equal(t, []string{"-rvd", "/tmp/opt", "nic", "dep1", "dep2"}, m.UnloadArgs(), "unload names the whole loading order")

	m = ModprobeSpec{ModuleName: "ignored", Parameters: []string{"x=1"}, RawArgs: &ModprobeArgs{Load: []string{"-v", "nic"}, Unload: []string{"-r", "nic"}}}
	assert.Equal(t, []string{"-v", "nic"}, m.LoadArgs(), "rawArgs replace the whole command")
	assert.Equal(t, []string{"-r", "nic"}, m.UnloadArgs())
}

func TestDecodeModuleConfig(t *testing.T) {
	c, err := DecodeModuleConfig([]byte("containerImage: r.io/m:v1\nmodprobe: {moduleName: nic}\n"))
	require.NoError(t, err, "KMM's worker reads a config without kernelVersion")
	assert.Equal(t, "", c.KernelVersion)
	assert.Equal(t, "/opt", c.Modprobe.DirName)

	_, err = DecodeModuleConfig([]byte("modprobe: {moduleName: x, dirname: /opt}\n"))
	assert.ErrorContains(t, err, `unknown field "modprobe.dirname"`)
	_, err = DecodeModuleConfig([]byte("modprobe: {}\n"))
	assert.ErrorContains(t, err, "modprobe.moduleName is required")
	_, err = DecodeModuleConfig([]byte("{"))
	assert.ErrorContains(t, err, "invalid YAML or JSON")
}

func TestValidateModuleConfig(t *testing.T) {
	c, err := DecodeModuleConfig([]byte(`
kernelVersion: 6.1.0-57-amd64
inTreeModulesToRemove: [old_nic]
modprobe:
  moduleName: nic
  dirName: /opt/../..
  firmwarePath: ../../lib/firmware
  args: {load: [--dry-run], unload: [-v]}
`))
	require.NoError(t, err, "decoding reads; validation judges")
	errs := ValidateModuleConfig(c)
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	assert.Equal(t, []string{
		`modprobe.dirName: Invalid value: "/opt/../..": must not contain "..": the path must stay inside the image`,
		`modprobe.firmwarePath: Invalid value: "../../lib/firmware": must be an absolute path in the image`,
		`modprobe.args.load[0]: Invalid value: "--dry-run": modprobe option --dry-run: it only prints or looks up; nothing would be loaded or removed, yet the worker would report success`,
	}, got)

	c.Modprobe = ModprobeSpec{ModuleName: "nic", DirName: "/opt", FirmwarePath: "/firmware"}
	assert.Empty(t, ValidateModuleConfig(c))
	c.InTreeModuleToRemove = "x"
	c.InTreeModulesToRemove = []string{"a b"}
	errs = ValidateModuleConfig(c)
	require.Len(t, errs, 2)
	assert.Equal(t, "inTreeModuleToRemove", errs[0].Field)
	assert.Equal(t, "inTreeModulesToRemove[0]", errs[1].Field)
}
