// Package reason holds the typed reasons kmmkit reports: in the Reason of
// a Module's conditions, in status.kernels[].reason, in the conditions of
// a loader.NodeState, in builder.Status and in the errors of the registry
// and loader packages. Every package reports with these constants and
// compares with them; none matches free text.
//
// A Reason is a machine-readable CamelCase word, valid as a
// metav1.Condition reason. Each constant's doc says what a user does about
// it; the README's "What the status means" table lists them by condition.
package reason

import (
	"errors"
	"strings"
)

// Reason is a machine-readable cause, valid as a metav1.Condition reason.
type Reason string

// String returns the reason as a plain string.
func (r Reason) String() string { return string(r) }

// The spec.
const (
	// InvalidSpec: the spec breaks a rule of Validate; nothing was done.
	// The message lists every error with its field path. Fix the spec.
	InvalidSpec Reason = "InvalidSpec"
	// Valid: the spec passed Validate.
	Valid Reason = "Valid"
)

// Kernel mapping.
const (
	// NoMapping: no kernel mapping matches a selected node's kernel, so
	// nothing can be loaded there. Add a mapping (or a regexp) for it.
	NoMapping Reason = "NoMapping"
	// MappingFailed: a mapping matched but could not be resolved (a bad
	// variable in containerImage, say).
	MappingFailed Reason = "MappingFailed"
	// NoKernelVersion: the node reports no kernel version yet.
	NoKernelVersion Reason = "NoKernelVersion"
)

// Registry and images.
const (
	// ImageReady: the image exists for the node's platform.
	ImageReady Reason = "ImageReady"
	// ImageNotFound: the registry said the image does not exist, and the
	// Module defines no build or sign for it.
	ImageNotFound Reason = "ImageNotFound"
	// Unauthorized: the registry refused the credentials, or asked for
	// some and none were given (the message names the pull secret).
	Unauthorized Reason = "Unauthorized"
	// TLSError: the TLS handshake failed, or plain HTTP was refused.
	TLSError Reason = "TLSError"
	// RegistryUnavailable: the registry could not be reached or kept
	// failing (refused, timeouts, 5xx, 429) after bounded retries.
	RegistryUnavailable Reason = "RegistryUnavailable"
	// InvalidReference: an image reference is malformed.
	InvalidReference Reason = "InvalidReference"
	// RegistryError: anything else a registry (or something that is not
	// one) answered.
	RegistryError Reason = "RegistryError"
	// ImageCorrupt: the image's content does not match its digests (a
	// tampered or truncated layer).
	ImageCorrupt Reason = "ImageCorrupt"
	// UnsafeImage: the image holds an entry that would escape its
	// directory, a device node, or exceeds a size or count limit.
	UnsafeImage Reason = "UnsafeImage"
	// LocalIOError: a local file system operation failed (disk full,
	// permissions): not the registry's fault.
	LocalIOError Reason = "LocalIOError"
)

// Builds and signing.
const (
	// Building: a build (or signing) is in progress.
	Building Reason = "Building"
	// BuildFailed: the build failed (the message has its log tail).
	BuildFailed Reason = "BuildFailed"
	// MissingSecret: a build or sign secret does not exist.
	MissingSecret Reason = "MissingSecret"
	// InvalidRequest: a build or worker request cannot be made from the
	// spec (a missing Dockerfile ConfigMap, say).
	InvalidRequest Reason = "InvalidRequest"
	// SignFailed: signing the image failed.
	SignFailed Reason = "SignFailed"
	// NoBuilder: the image is missing and the Module defines a build, but
	// the Reconciler was given no builder.
	NoBuilder Reason = "NoBuilder"
)

// Loading on nodes.
const (
	// Loaded: the module is loaded as the spec asks.
	Loaded Reason = "Loaded"
	// Loading: a worker is loading it.
	Loading Reason = "Loading"
	// Unloading: a worker is unloading it.
	Unloading Reason = "Unloading"
	// Unloaded: it is not loaded.
	Unloaded Reason = "Unloaded"
	// WorkerImagePullFailed: the kubelet cannot pull the worker image.
	WorkerImagePullFailed Reason = "WorkerImagePullFailed"
	// WorkerFailed: the worker ran and failed (its last error line is in
	// the message).
	WorkerFailed Reason = "WorkerFailed"
	// WorkerStuck: a worker has been pending or running too long.
	WorkerStuck Reason = "WorkerStuck"
	// WorkerPodRejected: the API server refused to create the worker Pod
	// (Pod Security admission — workers need the privileged level —, a
	// quota, a webhook); the message has its answer.
	WorkerPodRejected Reason = "WorkerPodRejected"
	// WorkerPodFailed: the worker Pod failed as a whole (evicted, say);
	// it is replaced.
	WorkerPodFailed Reason = "WorkerPodFailed"
	// NodeTaintNotTolerated: a NoExecute taint the Module does not
	// tolerate keeps workers off the node.
	NodeTaintNotTolerated Reason = "NodeTaintNotTolerated"
	// NodeNotReady: the node is not ready.
	NodeNotReady Reason = "NodeNotReady"
	// NameConflict: the name of this owner's worker Pod is taken by a Pod
	// that is not one of its workers (another operator's, or made by
	// hand). Remove that Pod, or give each operator its own identity
	// (kmm.WithIdentity).
	NameConflict Reason = "NameConflict"
	// LoaderFailed: the node loader returned an error before it could
	// report every node (the API server refused a list, say), so the
	// state of some nodes is unknown: Loaded is Unknown and the counts
	// are those last known. The next pass retries; the error is in the
	// operator's log.
	LoaderFailed Reason = "LoaderFailed"
	// ModuleInUse: the module cannot be unloaded because the kernel says
	// it is in use — its reference count is above zero, or other modules
	// hold it (/sys/module/<m>/refcnt, /sys/module/<m>/holders/); the
	// message names the holders. Stop what uses it (the device plugin,
	// the Pods using the device, the dependent module); the unload is
	// retried.
	ModuleInUse Reason = "ModuleInUse"
)

// The build a node runs.
const (
	// ModuleBuildMismatch: the kernel runs another build of the module
	// than the image's file — its srcversion (or, when a srcversion is
	// unknown, its version) differs — because an old build was not
	// unloaded or the module was loaded by hand; the message names the
	// module and both srcversions. Unload the module on the node (or let
	// kmmkit's upgrade do it); the load is retried.
	ModuleBuildMismatch Reason = "ModuleBuildMismatch"
)

// Ordered upgrade (spec.moduleLoader.container.version, KMM's version
// labels): why a selected node is not at the spec's version yet.
const (
	// VersionNotRequested: the node's version-module label is unset or
	// names another version than the spec's, so the node keeps what it
	// has (or unloads, when the label was removed). Set the label to the
	// spec's version to move the node.
	VersionNotRequested Reason = "VersionNotRequested"
	// VersionStepping: the node's version labels are moving towards its
	// version-module label, one step a pass; wait.
	VersionStepping Reason = "VersionStepping"
	// WaitingForDevicePlugin: the old version is not unloaded while a
	// device-plugin or DRA Pod of the owner is on the node (KMM's guard);
	// it goes once the schedule label is removed. A Pod that stays
	// (stuck terminating, say) holds the upgrade: remove it.
	WaitingForDevicePlugin Reason = "WaitingForDevicePlugin"
	// WaitingForUnload: the new version is not loaded while the ready
	// label says the old one is still loaded (KMM's guard); wait for the
	// unload (a failing unload says why on the node, ModuleInUse say).
	WaitingForUnload Reason = "WaitingForUnload"
	// NoVersionModuleLabel: the owner has a version and no selected node
	// has its version-module label, so nothing is loaded anywhere. Label
	// the nodes with the version to load it.
	NoVersionModuleLabel Reason = "NoVersionModuleLabel"
)

// Preflight: would a Module work on a kernel that nodes do not run yet
// (package preflight, kmm preflight, kmm image lint).
const (
	// ImageBuildable: the kernel's image does not exist yet, but the
	// Module defines a build (or signing) whose inputs exist — the
	// Dockerfile ConfigMap, the build and signing secrets, the unsigned
	// image —, so the Reconciler builds it when a node runs the kernel.
	// kmm preflight --build builds it now.
	ImageBuildable Reason = "ImageBuildable"
	// ImageLintFailed: the kernel's image exists (or a builder has just
	// built it, and refused to push it) but would not load on the
	// kernel: modules outside <dirName>/lib/modules/<kernel>, built
	// for another kernel or with other flags, missing or stale
	// modules.dep, a missing dependency, firmware or signature. The
	// message lists the findings; kmm image lint shows them all. Fix the
	// image.
	ImageLintFailed Reason = "ImageLintFailed"
	// ReadFailed: a Secret or ConfigMap the Module names could not be
	// read (the API server refused or could not be reached); the message
	// has the error. Retry.
	ReadFailed Reason = "ReadFailed"
	// PreflightPassed: every Module checked works on the kernel.
	PreflightPassed Reason = "PreflightPassed"
	// PreflightFailed: Modules fail on the kernel for different reasons;
	// the message names each Module and why.
	PreflightFailed Reason = "PreflightFailed"
)

// Module-level summaries.
const (
	// AllImagesReady: ImagesReady is true.
	AllImagesReady Reason = "AllImagesReady"
	// AllNodesLoaded: Loaded is true: every selected node has the module.
	AllNodesLoaded Reason = "AllNodesLoaded"
	// AsExpected: Degraded is false.
	AsExpected Reason = "AsExpected"
	// NodesFailing: Degraded is true because of nodes (the message names
	// them and why).
	NodesFailing Reason = "NodesFailing"
	// ImagesFailing: Degraded is true because of images.
	ImagesFailing Reason = "ImagesFailing"
	// NoTargetedNodes: no schedulable node matches the selector.
	NoTargetedNodes Reason = "NoTargetedNodes"
)

// The device plugin (spec.devicePlugin): condition DevicePluginReady.
const (
	// DevicePluginReady: the device plugin Pod is Ready on every node it
	// should run on.
	DevicePluginReady Reason = "DevicePluginReady"
	// DevicePluginNotReady: on some node the device plugin should run on
	// it has no Pod, or its Pod is not Ready; the message names each node
	// and why (no Pod yet, Pod not Ready, module not loaded there yet).
	// Look at the DaemonSet's Pods on those nodes.
	DevicePluginNotReady Reason = "DevicePluginNotReady"
	// DevicePluginFailed: the API server refused a read or write of the
	// device plugin's DaemonSets, Pods or node labels; the message has
	// its answer. The next pass retries.
	DevicePluginFailed Reason = "DevicePluginFailed"
)

// Rolling upgrade (kmm.WithRollingUpgrade, a kmmkit extension): the
// Upgraded condition and the node events of each step.
const (
	// UpgradeDone: Upgraded is true: every targeted node runs the
	// desired module.
	UpgradeDone Reason = "UpgradeDone"
	// UpgradeInProgress: nodes are being upgraded or wait for a slot
	// (the message counts them against the policy's limits); also the
	// reason of the Normal event of each node's step.
	UpgradeInProgress Reason = "UpgradeInProgress"
	// UpgradePaused: as many nodes as the policy's FailureThreshold have
	// failed, so no node is admitted any more; the message names each
	// failed node and why. Fix the cause (a new image or version starts
	// over; a load that succeeds on retry goes on), or label the node to
	// skip it and clear its state label.
	UpgradePaused Reason = "UpgradePaused"
	// UpgradeFailed: the Warning event of a node whose upgrade failed
	// (the message says in which step and why).
	UpgradeFailed Reason = "UpgradeFailed"
)

// Carrier is implemented by errors that carry a Reason.
type Carrier interface {
	error
	// ReasonOf returns the error's reason.
	ReasonOf() Reason
}

// Of returns the Reason carried by err or any error it wraps, or "" when
// none does.
func Of(err error) Reason {
	var c Carrier
	if errors.As(err, &c) {
		return c.ReasonOf()
	}
	return ""
}

// A worker's last line of output carries the reason of its failure to
// the cluster side (through its Pod's termination message): the message,
// then the reason in brackets. Tagged writes such a line; Untagged reads
// it back.

// Tagged returns msg with r appended in brackets ("… [ModuleInUse]"),
// or msg alone when r is empty.
func Tagged(msg string, r Reason) string {
	if r == "" {
		return msg
	}
	return msg + " [" + string(r) + "]"
}

// Untagged splits a line written by Tagged into its message and reason;
// a line without a tag is returned whole, with no reason.
func Untagged(line string) (string, Reason) {
	i := strings.LastIndex(line, " [")
	if i < 0 || !strings.HasSuffix(line, "]") || !isWord(line[i+2:len(line)-1]) {
		return line, ""
	}
	return line[:i], Reason(line[i+2 : len(line)-1])
}

// isWord reports whether s is a CamelCase word, as every Reason is.
func isWord(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for _, c := range s {
		if (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
