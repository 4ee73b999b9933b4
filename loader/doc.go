// Package loader will load and unload kernel modules on nodes: natively in
// the node (dependency order from modules.dep.bin, finit_module, firmware)
// and through worker Pods.
//
// It has no API yet: this package reserves its place in the layout.
package loader
