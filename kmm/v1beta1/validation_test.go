package v1beta1

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

func lref(n string) *corev1.LocalObjectReference { return &corev1.LocalObjectReference{Name: n} }

// validModule passes every rule; each test case breaks one.
func validModule() *Module {
	return &Module{
		ObjectMeta: metav1.ObjectMeta{Name: "mod", Namespace: "ns"},
		Spec: ModuleSpec{
			Selector: map[string]string{"kubernetes.io/os": "linux"},
			ModuleLoader: &ModuleLoaderSpec{Container: ModuleLoaderContainerSpec{
				Modprobe:       ModprobeSpec{ModuleName: "mod_a", DirName: "/opt"},
				ContainerImage: "registry.example.com/org/mod:${KERNEL_FULL_VERSION}",
				KernelMappings: []KernelMapping{{Regexp: `^6\.`}},
			}},
		},
	}
}

func container(m *Module) *ModuleLoaderContainerSpec { return &m.Spec.ModuleLoader.Container }

type fieldErr struct {
	typ   field.ErrorType
	field string
	msg   string // a substring of the detail
}

func TestValidate(t *testing.T) {
	const c = "spec.moduleLoader.container"
	tests := []struct {
		name   string
		mutate func(m *Module)
		want   []fieldErr
	}{
		{"valid", func(*Module) {}, nil},
		{"name+namespace at the limit", func(m *Module) {
			m.Name, m.Namespace = strings.Repeat("a", 20), strings.Repeat("b", 21)
		}, nil},
		{"name+namespace over 41", func(m *Module) {
			m.Name, m.Namespace = strings.Repeat("a", 21), strings.Repeat("b", 21)
		}, []fieldErr{{field.ErrorTypeInvalid, "metadata.name", "42 characters; at most 41"}}},
		{"no name", func(m *Module) { m.Name = "" }, []fieldErr{{field.ErrorTypeRequired, "metadata.name", ""}}},
		{"nil selector", func(m *Module) { m.Spec.Selector = nil }, []fieldErr{{field.ErrorTypeRequired, "spec.selector", "{}"}}},
		{"empty selector is fine", func(m *Module) { m.Spec.Selector = map[string]string{} }, nil},
		{"selector with a bad label key", func(m *Module) { m.Spec.Selector = map[string]string{"bad key": "x"} },
			[]fieldErr{{field.ErrorTypeInvalid, "spec.selector", "name part must consist"}}},
		{"empty imageRepoSecret name", func(m *Module) { m.Spec.ImageRepoSecret = lref("") },
			[]fieldErr{{field.ErrorTypeRequired, "spec.imageRepoSecret.name", ""}}},
		{"negative rebuild generation", func(m *Module) { m.Spec.ImageRebuildTriggerGeneration = ptr.To(-1) },
			[]fieldErr{{field.ErrorTypeInvalid, "spec.imageRebuildTriggerGeneration", "negative"}}},

		// Tolerations, as core Kubernetes validates them.
		{"valid tolerations", func(m *Module) {
			m.Spec.Tolerations = []corev1.Toleration{
				{Operator: corev1.TolerationOpExists},
				{Key: "a.io/b", Operator: corev1.TolerationOpEqual, Value: "v", Effect: corev1.TaintEffectNoSchedule},
				{Key: "k", Value: "v"},
				{Key: "k", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](5)},
			}
		}, nil},
		{"toleration key not qualified", func(m *Module) {
			m.Spec.Tolerations = []corev1.Toleration{{Key: "a b", Operator: corev1.TolerationOpExists}}
		}, []fieldErr{{field.ErrorTypeInvalid, "spec.tolerations[0].key", ""}}},
		{"empty key needs Exists", func(m *Module) {
			m.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpEqual}}
		}, []fieldErr{{field.ErrorTypeInvalid, "spec.tolerations[0].operator", "must be Exists when key is empty"}}},
		{"tolerationSeconds needs NoExecute", func(m *Module) {
			m.Spec.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule, TolerationSeconds: ptr.To[int64](5)}}
		}, []fieldErr{{field.ErrorTypeInvalid, "spec.tolerations[0].effect", "NoExecute"}}},
		{"Equal value must be a label value", func(m *Module) {
			m.Spec.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpEqual, Value: "not valid!"}}
		}, []fieldErr{{field.ErrorTypeInvalid, "spec.tolerations[0].value", ""}}},
		{"Exists needs empty value", func(m *Module) {
			m.Spec.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists, Value: "v"}}
		}, []fieldErr{{field.ErrorTypeInvalid, "spec.tolerations[0].value", "must be empty"}}},
		{"unknown operator and effect", func(m *Module) {
			m.Spec.Tolerations = []corev1.Toleration{{Key: "k", Operator: "In", Effect: "Sometimes"}}
		}, []fieldErr{{field.ErrorTypeNotSupported, "spec.tolerations[0].operator", ""}, {field.ErrorTypeNotSupported, "spec.tolerations[0].effect", ""}}},

		// Images.
		{"container image without tag", func(m *Module) { container(m).ContainerImage = "registry.example.com/org/mod" },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".containerImage", "tag or digest"}}},
		{"registry port is not a tag", func(m *Module) { container(m).ContainerImage = "registry.example.com:5000/org/mod" },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".containerImage", "tag or digest"}}},
		{"registry port and tag", func(m *Module) { container(m).ContainerImage = "registry.example.com:5000/org/mod:v1" }, nil},
		{"digest", func(m *Module) { container(m).ContainerImage = "r.io/m@sha256:abc" }, nil},
		{"unknown variable in image", func(m *Module) { container(m).ContainerImage = "r.io/m:${KERNEL_RELEASE}" },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".containerImage", `unknown variable "KERNEL_RELEASE"`}}},
		{"unterminated variable", func(m *Module) { container(m).ContainerImage = "r.io/m:${KERNEL_X" },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".containerImage", "unterminated ${"}}},
		{"whitespace in image", func(m *Module) { container(m).ContainerImage = "r.io/m:v 1" },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".containerImage", "whitespace"}}},
		{"bad pull policy", func(m *Module) { container(m).ImagePullPolicy = "Sometimes" },
			[]fieldErr{{field.ErrorTypeNotSupported, c + ".imagePullPolicy", ""}}},

		// Kernel mappings.
		{"no mappings", func(m *Module) { container(m).KernelMappings = nil },
			[]fieldErr{{field.ErrorTypeRequired, c + ".kernelMappings", ""}}},
		{"regexp and literal", func(m *Module) { container(m).KernelMappings[0].Literal = "6.1.0" },
			[]fieldErr{{field.ErrorTypeForbidden, c + ".kernelMappings[0].regexp", "mutually exclusive"}}},
		{"neither regexp nor literal", func(m *Module) { container(m).KernelMappings[0].Regexp = "" },
			[]fieldErr{{field.ErrorTypeRequired, c + ".kernelMappings[0].regexp", "regexp or literal must be set"}}},
		{"regexp does not compile", func(m *Module) {
			container(m).KernelMappings = append(container(m).KernelMappings, KernelMapping{Regexp: `^6\.(`})
		},
			[]fieldErr{{field.ErrorTypeInvalid, c + ".kernelMappings[1].regexp", "does not compile"}}},
		{"mapping without image and no container image", func(m *Module) { container(m).ContainerImage = "" },
			[]fieldErr{{field.ErrorTypeRequired, c + ".kernelMappings[0].containerImage", ""}}},
		{"mapping image is checked", func(m *Module) { container(m).KernelMappings[0].ContainerImage = "r.io/m" },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".kernelMappings[0].containerImage", "tag or digest"}}},
		{"mapping image variable", func(m *Module) { container(m).KernelMappings[0].ContainerImage = "r.io/m:$NOPE" },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".kernelMappings[0].containerImage", `"NOPE"`}}},

		// In-tree modules to remove.
		{"container plural and singular", func(m *Module) {
			container(m).InTreeModulesToRemove, container(m).InTreeModuleToRemove = []string{"a"}, "b"
		}, []fieldErr{{field.ErrorTypeForbidden, c + ".inTreeModuleToRemove", "mutually exclusive"}}},
		{"mapping plural and singular", func(m *Module) {
			container(m).KernelMappings[0].InTreeModulesToRemove, container(m).KernelMappings[0].InTreeModuleToRemove = []string{"a"}, "b"
		}, []fieldErr{{field.ErrorTypeForbidden, c + ".kernelMappings[0].inTreeModuleToRemove", "mutually exclusive"}}},
		{"mapping singular with container plural", func(m *Module) {
			container(m).InTreeModulesToRemove, container(m).KernelMappings[0].InTreeModuleToRemove = []string{"a"}, "b"
		}, []fieldErr{{field.ErrorTypeForbidden, c + ".kernelMappings[0].inTreeModuleToRemove", "container uses inTreeModulesToRemove"}}},
		{"mapping plural with container singular", func(m *Module) {
			container(m).InTreeModuleToRemove, container(m).KernelMappings[0].InTreeModulesToRemove = "a", []string{"b"}
		}, []fieldErr{{field.ErrorTypeForbidden, c + ".kernelMappings[0].inTreeModulesToRemove", "container uses inTreeModuleToRemove"}}},
		{"both singular is fine", func(m *Module) {
			container(m).InTreeModuleToRemove, container(m).KernelMappings[0].InTreeModuleToRemove = "a", "b"
		}, nil},
		{"in-tree name is a path", func(m *Module) { container(m).InTreeModulesToRemove = []string{"kernel/drivers/x.ko"} },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".inTreeModulesToRemove[0]", "kernel module name"}}},

		// modprobe.
		{"moduleName with rawArgs", func(m *Module) {
			container(m).Modprobe.RawArgs = &ModprobeArgs{Load: []string{"-v", "x"}, Unload: []string{"-r", "x"}}
		}, []fieldErr{{field.ErrorTypeForbidden, c + ".modprobe.rawArgs", "moduleName is set"}}},
		{"rawArgs without moduleName", func(m *Module) {
			container(m).Modprobe = ModprobeSpec{RawArgs: &ModprobeArgs{Load: []string{"x"}, Unload: []string{"-r", "x"}}}
		}, nil},
		{"neither moduleName nor rawArgs", func(m *Module) { container(m).Modprobe.ModuleName = "" },
			[]fieldErr{{field.ErrorTypeRequired, c + ".modprobe.rawArgs.load", ""}, {field.ErrorTypeRequired, c + ".modprobe.rawArgs.unload", ""}}},
		{"rawArgs without unload", func(m *Module) {
			container(m).Modprobe = ModprobeSpec{RawArgs: &ModprobeArgs{Load: []string{"x"}}}
		}, []fieldErr{{field.ErrorTypeRequired, c + ".modprobe.rawArgs.unload", ""}}},
		{"args without lists", func(m *Module) { container(m).Modprobe.Args = &ModprobeArgs{} }, nil},
		{"args with load only", func(m *Module) { container(m).Modprobe.Args = &ModprobeArgs{Load: []string{"--first-time"}} }, nil},
		{"args with empty lists", func(m *Module) { container(m).Modprobe.Args = &ModprobeArgs{Load: []string{}, Unload: []string{}} },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.args.load", "at least one item"}, {field.ErrorTypeInvalid, c + ".modprobe.args.unload", "at least one item"}}},
		{"empty loading order", func(m *Module) { container(m).Modprobe.ModulesLoadingOrder = []string{} },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.modulesLoadingOrder", "at least two"}}},
		{"moduleName is a path", func(m *Module) { container(m).Modprobe.ModuleName = "/opt/x.ko" },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.moduleName", "not a path"}}},
		{"valid loading order", func(m *Module) { container(m).Modprobe.ModulesLoadingOrder = []string{"mod_a", "mod_b"} }, nil},
		{"loading order too short", func(m *Module) { container(m).Modprobe.ModulesLoadingOrder = []string{"mod_a"} },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.modulesLoadingOrder", "at least two"}}},
		{"loading order not starting with moduleName", func(m *Module) { container(m).Modprobe.ModulesLoadingOrder = []string{"mod_b", "mod_a"} },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.modulesLoadingOrder[0]", `moduleName "mod_a"`}}},
		{"loading order with duplicates", func(m *Module) { container(m).Modprobe.ModulesLoadingOrder = []string{"mod_a", "mod_b", "mod_b"} },
			[]fieldErr{{field.ErrorTypeDuplicate, c + ".modprobe.modulesLoadingOrder[2]", ""}}},
		{"loading order without moduleName", func(m *Module) {
			container(m).Modprobe = ModprobeSpec{RawArgs: &ModprobeArgs{Load: []string{"x"}, Unload: []string{"-r", "x"}}, ModulesLoadingOrder: []string{"a", "b"}}
		}, []fieldErr{{field.ErrorTypeRequired, c + ".modprobe.moduleName", "modulesLoadingOrder"}}},

		// Paths in the image (issue 17).
		{"dirName relative", func(m *Module) { container(m).Modprobe.DirName = "opt" },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.dirName", "must be an absolute path in the image"}}},
		{"dirName with ..", func(m *Module) { container(m).Modprobe.DirName = "/opt/../../etc" },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.dirName", `must not contain "..": the path must stay inside the image`}}},
		{"dirName / is the image root", func(m *Module) { container(m).Modprobe.DirName = "/" }, nil},
		{"firmwarePath with ..", func(m *Module) { container(m).Modprobe.FirmwarePath = "/firmware/../../lib/firmware" },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.firmwarePath", `must not contain ".."`}}},
		{"firmwarePath that is only ..", func(m *Module) { container(m).Modprobe.FirmwarePath = "/.." },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.firmwarePath", `must not contain ".."`}}},
		{"firmwarePath relative", func(m *Module) { container(m).Modprobe.FirmwarePath = "firmware" },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.firmwarePath", "must be an absolute path in the image"}}},
		{"firmwarePath is the image root", func(m *Module) { container(m).Modprobe.FirmwarePath = "//" },
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.firmwarePath", "not the image's root"}}},
		{"firmwarePath in the image", func(m *Module) { container(m).Modprobe.FirmwarePath = "/firmware/acme..v2" }, nil},

		// modprobe.args and rawArgs: what the worker runs (issue 12).
		{"args the worker carries out", func(m *Module) {
			container(m).Modprobe.Args = &ModprobeArgs{Load: []string{"--first-time", "-b", "-q", "-v"}, Unload: []string{"--first-time", "-i"}}
		}, nil},
		{"args that only print", func(m *Module) {
			container(m).Modprobe.Args = &ModprobeArgs{Load: []string{"-v", "--dry-run"}, Unload: []string{"-n"}}
		}, []fieldErr{
			{field.ErrorTypeInvalid, c + ".modprobe.args.load[1]", "modprobe option --dry-run: it only prints or looks up; nothing would be loaded or removed"},
			{field.ErrorTypeInvalid, c + ".modprobe.args.unload[0]", "modprobe option -n: it only prints"},
		}},
		{"args that force", func(m *Module) {
			container(m).Modprobe.Args = &ModprobeArgs{Load: []string{"-f"}, Unload: []string{"-v"}}
		},
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.args.load[0]", "modprobe option -f: forcing past the kernel's version checks is not supported"}}},
		{"args with an unknown option", func(m *Module) {
			container(m).Modprobe.Args = &ModprobeArgs{Load: []string{"-vz"}, Unload: []string{"-v"}}
		},
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.args.load[0]", "modprobe option -z: is not a modprobe option"}}},
		{"args with a module name", func(m *Module) {
			container(m).Modprobe.Args = &ModprobeArgs{Load: []string{"other"}, Unload: []string{"-v"}}
		},
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.args.load[0]", `args may hold only options: modprobe would load "other" instead of moduleName "mod_a"`}}},
		{"args -a loads more modules", func(m *Module) {
			container(m).Modprobe.Args = &ModprobeArgs{Load: []string{"-a", "helper"}, Unload: []string{"helper"}}
		}, nil},
		{"args -a with parameters", func(m *Module) {
			container(m).Modprobe.Args = &ModprobeArgs{Load: []string{"-a"}, Unload: []string{"-v"}}
			container(m).Modprobe.Parameters = []string{"debug=1"}
		}, []fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.parameters[0]", "parameters cannot be used with -a"}}},
		{"args -r on load", func(m *Module) {
			container(m).Modprobe.Args = &ModprobeArgs{Load: []string{"-r"}, Unload: []string{"-v"}}
		},
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.args.load[0]", "-r removes modules: the load arguments must load"}}},
		{"args -d where the image is not", func(m *Module) {
			container(m).Modprobe.Args = &ModprobeArgs{Load: []string{"-d", "/opt"}, Unload: []string{"--dirname=/tmp/opt/"}}
		}, []fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.args.load[1]", "-d must be /tmp/opt: the worker finds modprobe.dirName /opt of the image there"}}},
		{"args -S", func(m *Module) {
			container(m).Modprobe.Args = &ModprobeArgs{Load: []string{"-S", "6.1.0-1-amd64"}, Unload: []string{"-v"}}
		},
			[]fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.args.load[1]", "modprobe option -S: the worker always uses the node's kernel"}}},
		{"rawArgs the worker carries out", func(m *Module) {
			container(m).Modprobe = ModprobeSpec{DirName: "/opt", RawArgs: &ModprobeArgs{
				Load: []string{"-v", "-d", "/tmp/opt", "mod_a", "who=me"}, Unload: []string{"-rv", "--dirname", "/tmp/opt", "mod_a", "mod_b"}}}
		}, nil},
		{"rawArgs unload that does not remove", func(m *Module) {
			container(m).Modprobe = ModprobeSpec{RawArgs: &ModprobeArgs{Load: []string{"x"}, Unload: []string{"x"}}}
		}, []fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.rawArgs.unload", "the unload arguments must remove modules: add -r"}}},
		{"rawArgs with options only", func(m *Module) {
			container(m).Modprobe = ModprobeSpec{RawArgs: &ModprobeArgs{Load: []string{"-v"}, Unload: []string{"-r"}}}
		}, []fieldErr{
			{field.ErrorTypeRequired, c + ".modprobe.rawArgs.load", "names no module to load"},
			{field.ErrorTypeRequired, c + ".modprobe.rawArgs.unload", "names no module to unload"},
		}},
		{"rawArgs loading a file", func(m *Module) {
			container(m).Modprobe = ModprobeSpec{RawArgs: &ModprobeArgs{Load: []string{"/tmp/opt/lib/modules/x.ko"}, Unload: []string{"-r", "./x.ko"}}}
		}, []fieldErr{
			{field.ErrorTypeInvalid, c + ".modprobe.rawArgs.load[0]", "loading a module file by its path is not supported"},
			{field.ErrorTypeInvalid, c + ".modprobe.rawArgs.unload[1]", "by its path"},
		}},
		{"rawArgs -a with a parameter", func(m *Module) {
			container(m).Modprobe = ModprobeSpec{RawArgs: &ModprobeArgs{Load: []string{"-a", "x", "y=1"}, Unload: []string{"-r", "x"}}}
		}, []fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.rawArgs.load[2]", "must be a module name"}}},
		{"rawArgs with a query and a config file", func(m *Module) {
			container(m).Modprobe = ModprobeSpec{RawArgs: &ModprobeArgs{Load: []string{"--show-depends", "-C", "/etc/m.conf", "x"}, Unload: []string{"-r", "x"}}}
		}, []fieldErr{
			{field.ErrorTypeInvalid, c + ".modprobe.rawArgs.load[0]", "modprobe option --show-depends: it only prints"},
			{field.ErrorTypeInvalid, c + ".modprobe.rawArgs.load[2]", "modprobe option -C: the worker reads no modprobe.d configuration"},
		}},
		{"rawArgs -d where the image is not", func(m *Module) {
			container(m).Modprobe = ModprobeSpec{DirName: "/mods", RawArgs: &ModprobeArgs{Load: []string{"-d/tmp/opt", "x"}, Unload: []string{"-r", "x"}}}
		}, []fieldErr{{field.ErrorTypeInvalid, c + ".modprobe.rawArgs.load[0]", "-d must be /tmp/mods"}}},

		// Build.
		{"valid build", func(m *Module) {
			container(m).Build = &Build{DockerfileConfigMap: lref("df"), BuildArgs: []BuildArg{{Name: "A"}}, Secrets: []corev1.LocalObjectReference{{Name: "s"}}, KanikoParams: &KanikoParams{Tag: "v1.24.0-debug"}}
		}, nil},
		{"build without Dockerfile", func(m *Module) { container(m).Build = &Build{} },
			[]fieldErr{{field.ErrorTypeRequired, c + ".build.dockerfileConfigMap.name", ""}}},
		{"mapping build without Dockerfile name", func(m *Module) { container(m).KernelMappings[0].Build = &Build{DockerfileConfigMap: lref("")} },
			[]fieldErr{{field.ErrorTypeRequired, c + ".kernelMappings[0].build.dockerfileConfigMap.name", ""}}},
		{"build arg problems", func(m *Module) {
			container(m).Build = &Build{DockerfileConfigMap: lref("df"), BuildArgs: []BuildArg{{Name: "A"}, {Name: ""}, {Name: "A"}}, Secrets: []corev1.LocalObjectReference{{}}}
		}, []fieldErr{
			{field.ErrorTypeRequired, c + ".build.buildArgs[1].name", ""},
			{field.ErrorTypeDuplicate, c + ".build.buildArgs[2].name", ""},
			{field.ErrorTypeRequired, c + ".build.secrets[0].name", ""},
		}},
		{"bad kaniko tag", func(m *Module) {
			container(m).Build = &Build{DockerfileConfigMap: lref("df"), KanikoParams: &KanikoParams{Tag: ":v1"}}
		},
			[]fieldErr{{field.ErrorTypeInvalid, c + ".build.kanikoParams.tag", "tag"}}},

		// Sign.
		{"valid sign", func(m *Module) {
			container(m).Sign = &Sign{KeySecret: lref("k"), CertSecret: lref("c"), FilesToSign: []string{"/opt/lib/modules/${KERNEL_FULL_VERSION}/a.ko"}}
		}, nil},
		{"sign without anything", func(m *Module) { container(m).Sign = &Sign{} }, []fieldErr{
			{field.ErrorTypeRequired, c + ".sign.keySecret.name", ""},
			{field.ErrorTypeRequired, c + ".sign.certSecret.name", ""},
			{field.ErrorTypeRequired, c + ".sign.filesToSign", ""},
		}},
		{"file outside dirName", func(m *Module) {
			container(m).Sign = &Sign{KeySecret: lref("k"), CertSecret: lref("c"), FilesToSign: []string{"/opt/a.ko", "/optional/b.ko", "/usr/c.ko"}}
		}, []fieldErr{
			{field.ErrorTypeInvalid, c + ".sign.filesToSign[1]", `under modprobe.dirName "/opt"`},
			{field.ErrorTypeInvalid, c + ".sign.filesToSign[2]", `under modprobe.dirName "/opt"`},
		}},
		{"dirName defaults to /opt", func(m *Module) {
			container(m).Modprobe.DirName = ""
			container(m).Sign = &Sign{KeySecret: lref("k"), CertSecret: lref("c"), FilesToSign: []string{"/opt/a.ko"}}
		}, nil},
		{"custom dirName with trailing slash", func(m *Module) {
			container(m).Modprobe.DirName = "/mods/"
			container(m).KernelMappings[0].Sign = &Sign{KeySecret: lref("k"), CertSecret: lref("c"), FilesToSign: []string{"/mods/a.ko", "/opt/b.ko"}}
		}, []fieldErr{{field.ErrorTypeInvalid, c + ".kernelMappings[0].sign.filesToSign[1]", `"/mods/"`}}},
		{"unknown variable in files and unsigned image", func(m *Module) {
			container(m).Sign = &Sign{KeySecret: lref("k"), CertSecret: lref("c"), UnsignedImage: "r.io/u:${X}", FilesToSign: []string{"/opt/${Y}/a.ko"}}
		}, []fieldErr{
			{field.ErrorTypeInvalid, c + ".sign.unsignedImage", `"X"`},
			{field.ErrorTypeInvalid, c + ".sign.filesToSign[0]", `"Y"`},
		}},

		// Device plugin and DRA.
		{"device plugin and DRA", func(m *Module) {
			m.Spec.DevicePlugin = &DevicePluginSpec{Container: CommonContainerSpec{Image: "dp:v1"}}
			m.Spec.DRA = &DRASpec{DriverName: "gpu.example.com", Container: CommonContainerSpec{Image: "dra:v1"}}
		}, []fieldErr{{field.ErrorTypeForbidden, "spec.dra", "mutually exclusive"}}},
		{"device plugin volumes and image", func(m *Module) {
			m.Spec.DevicePlugin = &DevicePluginSpec{
				InitContainer: &CommonContainerSpec{},
				Volumes: []corev1.Volume{
					{Name: "ok", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/kubelet"}}},
					{Name: "etc", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/etc"}}},
					{Name: "prefix", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/variable"}}},
					{Name: "escape", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/dev/../etc"}}},
					{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
				},
			}
		}, []fieldErr{
			{field.ErrorTypeRequired, "spec.devicePlugin.container.image", ""},
			{field.ErrorTypeRequired, "spec.devicePlugin.initContainer.image", ""},
			{field.ErrorTypeInvalid, "spec.devicePlugin.volumes[1].hostPath.path", "/dev, /sys, /var, /opt, /run"},
			{field.ErrorTypeInvalid, "spec.devicePlugin.volumes[2].hostPath.path", ""},
			{field.ErrorTypeInvalid, "spec.devicePlugin.volumes[3].hostPath.path", ""},
		}},
		{"DRA rules", func(m *Module) {
			m.Spec.DRA = &DRASpec{
				DriverName:    "Not_A_Subdomain",
				Container:     CommonContainerSpec{Image: "dra:v1"},
				DeviceClasses: []DRADeviceClass{{Name: "a.example.com"}, {Name: ""}, {Name: "a.example.com"}, {Name: "UPPER"}},
			}
		}, []fieldErr{
			{field.ErrorTypeInvalid, "spec.dra.driverName", ""},
			{field.ErrorTypeRequired, "spec.dra.deviceClasses[1].name", ""},
			{field.ErrorTypeDuplicate, "spec.dra.deviceClasses[2].name", ""},
			{field.ErrorTypeInvalid, "spec.dra.deviceClasses[3].name", ""},
		}},
		{"DRA driver name required", func(m *Module) { m.Spec.DRA = &DRASpec{Container: CommonContainerSpec{Image: "dra:v1"}} },
			[]fieldErr{{field.ErrorTypeRequired, "spec.dra.driverName", ""}}},
		{"no moduleLoader is fine", func(m *Module) { m.Spec.ModuleLoader = nil }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := validModule()
			tc.mutate(m)
			errs := Validate(m)
			got := make([]fieldErr, len(errs))
			for i, e := range errs {
				got[i] = fieldErr{typ: e.Type, field: e.Field}
			}
			want := make([]fieldErr, len(tc.want))
			for i, w := range tc.want {
				want[i] = fieldErr{typ: w.typ, field: w.field}
			}
			require.Equal(t, want, got, "errors: %v", errs)
			for i, w := range tc.want {
				assert.Contains(t, errs[i].Error(), w.msg)
			}
		})
	}
}

func TestValidateReportsEverythingAtOnce(t *testing.T) {
	m := validModule()
	m.Name = strings.Repeat("x", 50)
	container(m).ContainerImage = "r.io/m"
	container(m).KernelMappings = []KernelMapping{{}, {Regexp: "(", Literal: "x"}}
	container(m).Modprobe.ModulesLoadingOrder = []string{"other"}
	errs := Validate(m)
	fields := map[string]bool{}
	for _, e := range errs {
		fields[e.Field] = true
	}
	for _, f := range []string{
		"metadata.name",
		"spec.moduleLoader.container.containerImage",
		"spec.moduleLoader.container.kernelMappings[0].regexp",
		"spec.moduleLoader.container.kernelMappings[1].regexp",
		"spec.moduleLoader.container.modprobe.modulesLoadingOrder",
		"spec.moduleLoader.container.modprobe.modulesLoadingOrder[0]",
	} {
		assert.True(t, fields[f], "missing an error for %s in %v", f, errs)
	}
	assert.GreaterOrEqual(t, len(errs), 6)
	assert.Contains(t, errs.ToAggregate().Error(), "metadata.name")
}

func TestValidateUpdateVersion(t *testing.T) {
	withVersion := func(v string) *Module {
		m := validModule()
		container(m).Version = v
		return m
	}
	assert.Empty(t, ValidateUpdate(withVersion(""), withVersion("")))
	assert.Empty(t, ValidateUpdate(withVersion("1"), withVersion("2")))
	for _, pair := range [][2]string{{"", "1"}, {"1", ""}} {
		errs := ValidateUpdate(withVersion(pair[0]), withVersion(pair[1]))
		require.Len(t, errs, 1)
		assert.Equal(t, "spec.moduleLoader.container.version", errs[0].Field)
		assert.Equal(t, field.ErrorTypeForbidden, errs[0].Type)
		assert.Contains(t, errs[0].Error(), "delete the Module and create it again")
	}
	noLoader := validModule()
	noLoader.Spec.ModuleLoader = nil
	assert.Len(t, ValidateUpdate(noLoader, withVersion("1")), 1)
	bad := withVersion("1")
	bad.Spec.Selector = nil
	assert.Len(t, ValidateUpdate(withVersion("1"), bad), 1, "the new object is validated too")
}

// TestValidateSpecUpdateVersion: an embedded spec is held to the same
// webhook rule, at its own path.
func TestValidateSpecUpdateVersion(t *testing.T) {
	withVersion := func(v string) *ModuleSpec {
		m := validModule()
		container(m).Version = v
		return &m.Spec
	}
	at := field.NewPath("spec", "driver")
	assert.Empty(t, ValidateSpecUpdate(withVersion("1"), withVersion("2"), at))
	for _, pair := range [][2]string{{"", "v1"}, {"v1", ""}} {
		errs := ValidateSpecUpdate(withVersion(pair[0]), withVersion(pair[1]), at)
		require.Len(t, errs, 1)
		assert.Equal(t, "spec.driver.moduleLoader.container.version", errs[0].Field)
		assert.Equal(t, field.ErrorTypeForbidden, errs[0].Type)
		assert.Contains(t, errs[0].Error(), `cannot change from "`+pair[0]+`" to "`+pair[1]+`"`)
	}
	bad := withVersion("1")
	bad.Selector = nil
	assert.Len(t, ValidateSpecUpdate(withVersion("1"), bad, at), 1, "the new spec is validated too")
}

func TestValidateSpecEmbedded(t *testing.T) {
	m := validModule()
	container(m).ContainerImage = "r.io/m"
	errs := ValidateSpec(&m.Spec, field.NewPath("spec", "driver"))
	require.Len(t, errs, 1)
	assert.Equal(t, "spec.driver.moduleLoader.container.containerImage", errs[0].Field)
}

// TestValidateKubernetesVersion: WithKubernetesVersion gates spec.dra as
// KMM's webhook does, and a version that does not parse says so rather
// than passing.
func TestValidateKubernetesVersion(t *testing.T) {
	m := &Module{ObjectMeta: metav1.ObjectMeta{Name: "dra", Namespace: "ns"}, Spec: ModuleSpec{Selector: map[string]string{},
		DRA: &DRASpec{DriverName: "gpu.example.com", Container: CommonContainerSpec{Image: "dra:v1"}}}}
	assert.Empty(t, Validate(m), "no version: no gate")
	assert.Empty(t, Validate(m, WithKubernetesVersion("v1.34.0-gke.1")))
	errs := Validate(m, WithKubernetesVersion("v1.33.7"))
	require.Len(t, errs, 1)
	assert.Equal(t, "spec.dra", errs[0].Field)
	assert.Contains(t, errs[0].Error(), "spec.dra requires Kubernetes 1.34 or later; the cluster runs 1.33")
	errs = Validate(m, WithKubernetesVersion("latest"))
	require.Len(t, errs, 1)
	assert.Equal(t, field.ErrorTypeInternal, errs[0].Type)
	assert.Contains(t, errs[0].Error(), `Kubernetes version "latest"`)
	m.Spec.DRA = nil
	assert.Empty(t, Validate(m, WithKubernetesVersion("v1.20.0")), "the gate concerns spec.dra only")
}

// TestWithoutDRA: KMM's rules accept spec.dra; WithoutDRA refuses it,
// naming the field, and leaves a spec without one alone.
func TestWithoutDRA(t *testing.T) {
	spec := &ModuleSpec{Selector: map[string]string{}, DRA: &DRASpec{DriverName: "gpu.example.com", Container: CommonContainerSpec{Image: "dra:v1"}}}
	assert.Empty(t, ValidateSpec(spec, field.NewPath("spec")))
	errs := ValidateSpec(spec, field.NewPath("spec"), WithoutDRA())
	require.Len(t, errs, 1)
	assert.Equal(t, "spec.dra", errs[0].Field)
	assert.Equal(t, field.ErrorTypeForbidden, errs[0].Type)
	spec.DRA = nil
	assert.Empty(t, ValidateSpec(spec, field.NewPath("spec"), WithoutDRA()))
}
