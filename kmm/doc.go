// Package kmm is the entry point of kmmkit for operator authors: the
// Module API and the Reconciler that drives kernel mapping, image checks,
// builds, signing and loading across a cluster.
//
// A Reconciler is built from pieces, each an interface with a real default
// and a fake: a kernelmap.Mapper, a registry.ImageChecker, a
// builder.Builder, an ImageSigner and a loader.NodeLoader. Reconcile drives
// a KMM Module (with WithModuleClient: finalizer and status included);
// ReconcileSpec drives a ModuleSpec embedded in an operator's own resource
// and returns the status to write. Both are level-triggered and
// idempotent: a second pass with nothing changed writes nothing, and a
// pass cut at any point and run again never duplicates a build or a
// worker Pod, loses a result or unloads a module by mistake.
//
// Each pass first validates the spec with every rule of v1beta1.Validate
// (a Module) or v1beta1.ValidateSpec (an embedded spec, at the caller's
// Object.SpecPath); an invalid spec changes nothing in the cluster and is
// reported as Valid=False. Then, per Module and kernel, it maps the
// kernel, checks the image once per distinct image (re-verifying it
// periodically, and at once when spec.imageRebuildTriggerGeneration
// changes), builds it when it is missing and a build is defined (to an
// intermediate tag when it is to be signed, so unsigned modules never
// appear at the final tag), signs it, and loads it on every targeted node;
// it unloads from nodes no longer targeted. With spec.devicePlugin it
// keeps KMM's device plugin DaemonSet (one per version) and its
// device-plugin-target and device-plugin-ready node labels, and on
// deletion removes the device plugin before any node unloads; spec.dra
// is refused (kmmkit runs no DRA driver).
//
// A spec with moduleLoader.container.version is upgraded node by node, as
// KMM's ordered upgrade: the administrator's version-module node label
// says which version a node should run, and each pass moves the
// version-worker-pod and version-schedule-pod labels one step towards it
// (KMM's action table and guards: no unload while a device-plugin or DRA
// Pod of the owner is on the node, no load while the old version is); the
// loader loads the current image where version-worker-pod is the spec's
// version, keeps what is loaded where it names another, and unloads where
// it is absent, so a node without the label gets nothing.
//
// The status is the truth about every selected node: each one is desired,
// and one without a driver (no mapping for its kernel, an image that is
// missing or cannot be checked, built or signed, a failing worker) makes
// Loaded not True and Degraded True, naming it and why. Status carries
// KMM's counts, the conditions Valid, ImagesReady, Loaded and Degraded
// (and DevicePluginReady with a device plugin) with the reasons of package github.com/kmmkit/kmmkit/reason, and a
// per-kernel summary with a state (v1beta1.KernelState) and a reason;
// events go to the Module; NewMetrics exports KMM's kmm_* gauges and
// more. The README's "What the status means" lists every reason and what
// to do about it. A pass logs its decisions at V(1) to WithLogger's
// logger, or to the context's.
//
// The owners a Reconciler drives are named by an identity (WithIdentity,
// package identity): KMM's Module by default, with KMM's exact keys and
// names, or an embedding operator's kind in its own label domain, so that
// operators and KMM never share a label, an annotation or a Pod;
// cluster-scoped owners run their Pods in Object.PodNamespace.
//
// The API types live in [github.com/kmmkit/kmmkit/kmm/v1beta1] and are
// field-compatible with KMM's kmm.sigs.x-k8s.io/v1beta1 Module (kmmkit
// adds status.conditions and status.kernels); this package gives the main
// ones short names. kmm/kmmtest is a harness of fakes for users' tests.
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
