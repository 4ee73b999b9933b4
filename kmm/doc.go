// Package kmm is the entry point of kmmkit for operator authors: the Module
// API and, as the SDK grows, the Reconciler that drives mapping, image
// checks, builds, signing and loading across a cluster.
//
// The API types live in [github.com/kmmkit/kmmkit/kmm/v1beta1] and are
// field-compatible with KMM's kmm.sigs.x-k8s.io/v1beta1 Module; this package
// gives the main ones short names. Kernel mapping lives in
// [github.com/kmmkit/kmmkit/kernelmap].
package kmm

import "github.com/kmmkit/kmmkit/kmm/v1beta1"

// Module is KMM's Module resource; see [v1beta1.Module].
type Module = v1beta1.Module

// ModuleList is a list of Modules; see [v1beta1.ModuleList].
type ModuleList = v1beta1.ModuleList

// ModuleSpec is the desired state of a Module, which operators may embed in
// their own resources; see [v1beta1.ModuleSpec].
type ModuleSpec = v1beta1.ModuleSpec

// ModuleStatus is the observed state of a Module; see [v1beta1.ModuleStatus].
type ModuleStatus = v1beta1.ModuleStatus
