package v1beta1

import (
	"fmt"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// DecodeModuleConfig reads a worker config file (YAML or JSON) strictly:
// unknown fields are an error naming them. An empty dirName becomes /opt.
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
	if c.KernelVersion == "" {
		return nil, fmt.Errorf("kernelVersion is required")
	}
	if c.Modprobe.ModuleName == "" && c.Modprobe.RawArgs == nil {
		return nil, fmt.Errorf("modprobe.moduleName is required")
	}
	return &c, nil
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
