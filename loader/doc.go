// Package loader loads and unloads kernel modules on a node.
//
// [Native] is the in-node loader: given a module tree (<dirName>/lib/
// modules/<kver>, as a kmod image holds it) and a module name, it resolves
// the load order from modules.dep.bin with kmmkit's own index reader (plus
// softdeps and KMM's modulesLoadingOrder), skips what is already loaded,
// checks every module's whole vermagic (release and flags) against the
// running kernel's before it loads anything, and loads with finit_module,
// mapping kernel errors to messages a user can act on. A load that fails
// part way unloads again what it loaded, and its error says so. It needs
// neither kmod nor a shell. Unloading goes in reverse order and never
// removes a module that something else still uses.
//
// [Worker] does KMM's worker job on top of it (in-tree removal, firmware
// copy and firmware_class path, load; unload and firmware cleanup) for a
// [github.com/kmmkit/kmmkit/kmm/v1beta1.ModuleConfig], running the modprobe
// command KMM's worker would (args, rawArgs) with kmod's meaning of its
// options; `kmm worker load|unload --config F` runs it, pulling and
// extracting the image itself or using a directory an init container
// filled.
//
// [WorkerPod] builds the one-shot Pod that runs the worker on a node, and
// [PodLoader], the Kubernetes [NodeLoader], drives those Pods: per node and
// Module it compares the desired config with the one recorded as loaded
// (KMM's NodeModulesConfig, kept here in a node annotation), and loads,
// unloads then reloads on a config change, loads directly on a new kernel,
// reloads after a reboot (bootID) and unloads where the Module is no longer
// wanted. It sets KMM's .ready and .version.ready node labels, emits
// ModuleLoaded and ModuleUnloaded events, and reports a worker that cannot
// pull its image, fails or is stuck as a condition with the reason.
//
// The owner of the Pods and node keys is named by an identity
// ([github.com/kmmkit/kmmkit/identity]): KMM's Module by default, with
// KMM's exact label keys and Pod names, or an embedding operator's kind
// in its own label domain, so two operators and KMM never touch each
// other's Pods, labels or annotations; cluster-scoped owners run their
// workers in a namespace the operator names. Node and Pod views may come
// from lagging informer caches (SyncRequest.Nodes, WithPodLister): the
// loader remembers its own writes and reads again from the API server
// whatever a view contradicts, so a lagging cache never makes it start a
// worker twice, unload what it loaded, or flip a label back.
//
// loader/fake holds an in-memory Kernel for tests of code that loads
// modules, and an in-memory NodeLoader for tests of controllers.
package loader
