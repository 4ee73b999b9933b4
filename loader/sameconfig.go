package loader

import (
	"slices"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// sameConfig reports whether a and b load the same thing, field by field,
// as equality.Semantic.DeepEqual would (a nil list equals an empty one)
// without reflection: a steady pass compares one config per node and
// owner. TestSameConfigSeesEveryField fails when ModuleConfig gains a
// field that is not compared here.
func sameConfig(a, b *v1beta1.ModuleConfig) bool {
	if a == b {
		return true
	}
	return a.KernelVersion == b.KernelVersion &&
		a.ContainerImage == b.ContainerImage &&
		a.ImagePullPolicy == b.ImagePullPolicy &&
		a.InsecurePull == b.InsecurePull &&
		slices.Equal(a.InTreeModulesToRemove, b.InTreeModulesToRemove) &&
		a.InTreeModuleToRemove == b.InTreeModuleToRemove &&
		sameModprobe(&a.Modprobe, &b.Modprobe)
}

func sameModprobe(a, b *v1beta1.ModprobeSpec) bool {
	return a.ModuleName == b.ModuleName &&
		slices.Equal(a.Parameters, b.Parameters) &&
		a.DirName == b.DirName &&
		sameArgs(a.Args, b.Args) &&
		sameArgs(a.RawArgs, b.RawArgs) &&
		a.FirmwarePath == b.FirmwarePath &&
		slices.Equal(a.ModulesLoadingOrder, b.ModulesLoadingOrder)
}

func sameArgs(a, b *v1beta1.ModprobeArgs) bool {
	if a == nil || b == nil {
		return a == b
	}
	return slices.Equal(a.Load, b.Load) && slices.Equal(a.Unload, b.Unload)
}
