// Package loader is the cluster side of loading kernel modules: it runs
// the worker on each node in one-shot Pods and records what is loaded
// where. What runs on the node (the native loader and KMM's worker) is
// package loader/node, which links no Kubernetes client.
//
// [WorkerPod] builds the one-shot Pod that runs the worker on a node
// (`/kmm worker load|unload` from the worker image, whose /kmm is
// the worker binary, cmd/kmm-worker, as `kmm image worker` builds it),
// and [PodLoader], the Kubernetes [NodeLoader], drives those Pods: per
// node and Module it compares the desired config with the one recorded as
// loaded (KMM's NodeModulesConfig, kept here in a node annotation), and
// loads, unloads then reloads on a config change, loads directly on a new
// kernel, reloads after a reboot (bootID) and unloads where the Module is
// no longer wanted. It sets KMM's .ready and .version.ready node labels,
// emits ModuleLoaded and ModuleUnloaded events, and reports a worker that
// cannot pull its image, fails or is stuck as a condition with the
// reason.
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
// loader/fake holds an in-memory NodeLoader for tests of controllers.
package loader
