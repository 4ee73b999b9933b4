package v1beta1

import (
	"fmt"
	"path"

	"k8s.io/apimachinery/pkg/util/validation/field"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// DecodeModuleConfig reads a worker config file (YAML or JSON) strictly:
// unknown fields are an error naming them. An empty dirName becomes /opt.
// As in KMM's worker, kernelVersion may be empty: the worker then uses the
// running kernel's release. ValidateModuleConfig checks the rest.
func DecodeModuleConfig(data []byte) (*ModuleConfig, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("invalid YAML or JSON: %w", err)
	}
	var c ModuleConfig
	strict, err := kjson.UnmarshalStrict(js, &c)
	if err != nil {
		return nil, err
	}
	if len(strict) > 0 {
		return nil, strict[0]
	}
	if c.Modprobe.DirName == "" {
		c.Modprobe.DirName = DefaultDirName
	}
	if c.Modprobe.ModuleName == "" && c.Modprobe.RawArgs == nil {
		return nil, fmt.Errorf("modprobe.moduleName is required")
	}
	return &c, nil
}

// ValidateModuleConfig applies to a worker config the rules Validate
// applies to a Module's modprobe section and in-tree module names, with
// field paths from the config's root (modprobe.firmwarePath, ...). A worker
// runs it before it touches the node.
func ValidateModuleConfig(c *ModuleConfig) field.ErrorList {
	errs := validateModprobe(&c.Modprobe, field.NewPath("modprobe"))
	if c.InTreeModulesToRemove != nil && c.InTreeModuleToRemove != "" {
		errs = append(errs, field.Forbidden(field.NewPath("inTreeModuleToRemove"), "inTreeModulesToRemove and inTreeModuleToRemove are mutually exclusive"))
	}
	errs = append(errs, validateModuleNames(c.InTreeToRemove(), field.NewPath("inTreeModulesToRemove"))...)
	return errs
}

// InTreeToRemove returns the in-tree modules to remove: the list, or the
// deprecated single name.
func (c *ModuleConfig) InTreeToRemove() []string {
	if c.InTreeModulesToRemove != nil {
		return c.InTreeModulesToRemove
	}
	if c.InTreeModuleToRemove != "" {
		return []string{c.InTreeModuleToRemove}
	}
	return nil
}

// KMMSharedDir is where KMM's worker finds the image's files: its init
// container copies <dirName>/lib/modules/<kernel> and <firmwarePath> under
// it, and modprobe gets -d /tmp<dirName>. kmmkit's worker reads -d the same
// way, as a path under it.
const KMMSharedDir = "/tmp"

// LoadArgs returns the arguments KMM's worker gives modprobe to load:
// rawArgs.load when rawArgs is set, else -vd /tmp<dirName>, args.load,
// moduleName and the parameters.
func (m *ModprobeSpec) LoadArgs() []string {
	argv, _ := m.argv(false, nil)
	return argv
}

// UnloadArgs returns the arguments KMM's worker gives modprobe to unload:
// rawArgs.unload when rawArgs is set, else -rvd /tmp<dirName>, args.unload
// and every modulesLoadingOrder entry, or moduleName without one.
func (m *ModprobeSpec) UnloadArgs() []string {
	argv, _ := m.argv(true, nil)
	return argv
}

// dirName returns dirName or its default.
func (m *ModprobeSpec) dirName() string {
	if m.DirName == "" {
		return DefaultDirName
	}
	return m.DirName
}

// argv builds the modprobe arguments and, for each, the field it comes
// from under p.
func (m *ModprobeSpec) argv(unload bool, p *field.Path) ([]string, []*field.Path) {
	var argv []string
	var src []*field.Path
	add := func(f *field.Path, words ...string) {
		for _, w := range words {
			argv = append(argv, w)
			src = append(src, f)
		}
	}
	addList := func(f *field.Path, words []string) {
		for i, w := range words {
			add(f.Index(i), w)
		}
	}
	if m.RawArgs != nil {
		if unload {
			addList(p.Child("rawArgs", "unload"), m.RawArgs.Unload)
		} else {
			addList(p.Child("rawArgs", "load"), m.RawArgs.Load)
		}
		return argv, src
	}
	dir := path.Join(KMMSharedDir, m.dirName())
	if unload {
		add(p.Child("dirName"), "-rvd", dir)
		if m.Args != nil {
			addList(p.Child("args", "unload"), m.Args.Unload)
		}
		if len(m.ModulesLoadingOrder) > 0 {
			addList(p.Child("modulesLoadingOrder"), m.ModulesLoadingOrder)
		} else {
			add(p.Child("moduleName"), m.ModuleName)
		}
		return argv, src
	}
	add(p.Child("dirName"), "-vd", dir)
	if m.Args != nil {
		addList(p.Child("args", "load"), m.Args.Load)
	}
	add(p.Child("moduleName"), m.ModuleName)
	addList(p.Child("parameters"), m.Parameters)
	return argv, src
}
