// Package node is the node side of the loader: what runs on a node to
// load and unload kernel modules, with no Kubernetes client in it. The
// worker binary (cmd/kmm-worker, /kmm in the worker image) links this
// package, package registry for its pulls and kmm/v1beta1 for its config,
// and none of client-go's clientsets, informers or event recorders: a test
// (cmd/kmm-worker's TestNodeSideLinksNoKubernetesClient) holds that rule.
// The cluster side, which runs worker Pods on nodes, is package loader.
//
// [Native] is the in-node loader: given a module tree ([Tree]:
// <dirName>/lib/modules/<kver>, as a kmod image holds it) and a module
// name, it resolves the load order from modules.dep.bin with kmmkit's own
// index reader (plus softdeps and KMM's modulesLoadingOrder), skips what
// is already loaded, checks every module's whole vermagic (release and
// flags) against the running kernel's before it loads anything, and loads
// with finit_module, mapping kernel errors to messages a user can act on
// ([Error]). A load that fails part way unloads again what it loaded, and
// its error says so. It needs neither kmod nor a shell. Unloading goes in
// reverse order and never removes a module that something else still
// uses. It asks the running kernel through [Kernel]; [LinuxKernel] is
// the real one.
//
// [Worker] does KMM's worker job on top of it (in-tree removal, firmware
// copy and firmware_class path, load; unload and firmware cleanup) for a
// [github.com/kmmkit/kmmkit/kmm/v1beta1.ModuleConfig], running the modprobe
// command KMM's worker would (args, rawArgs) with kmod's meaning of its
// options. `kmm worker load|unload --config F` runs it, pulling and
// extracting the image itself or using a directory an init container
// filled; `kmm worker kmod load|unload F [--firmware-path P]` is KMM's own
// worker command line, for KMM's operator running kmmkit's worker image.
//
// loader/node/fake holds an in-memory Kernel for tests of code that loads
// modules.
package node
