// Package loader loads and unloads kernel modules on a node.
//
// [Native] is the in-node loader: given a module tree (<dirName>/lib/
// modules/<kver>, as a kmod image holds it) and a module name, it resolves
// the load order from modules.dep.bin with kmmkit's own index reader (plus
// softdeps and KMM's modulesLoadingOrder), skips what is already loaded,
// checks each module's vermagic against the running kernel, and loads with
// finit_module, mapping kernel errors to messages a user can act on. It
// needs neither kmod nor a shell. Unloading goes in reverse order and never
// removes a module that something else still uses.
//
// The worker-Pod loader for Kubernetes is not here yet.
package loader
