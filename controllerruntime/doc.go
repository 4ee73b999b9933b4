// Package controllerruntime is the root of kmmkit's controller-runtime
// integration, a Go module of its own so that importing kmmkit never pulls
// controller-runtime in. It holds no code; its packages are:
//
//   - operator: SetupModule (a controller for KMM's Module) and
//     SetupEmbedded (for an operator's own kind that embeds a ModuleSpec),
//     with the finalizer, status, events, requeues, owner references and
//     watches; the kubebuilder:rbac markers of what kmmkit needs.
//   - watch: which node and Pod events concern which owner (NodeHandler,
//     NodePredicate, PodHandler).
//   - cached: nodes, kmmkit's Pods, and optionally Secrets, ConfigMaps and
//     Namespaces read from the manager's cache; the cache's Pod selector.
//   - admission: validating webhooks for Modules and embedded specs.
//   - fakekubelet: finishes worker Pods in integration tests, where no
//     kubelet runs.
//   - cmd/kmm-operator: the drop-in operator for KMM's Module; its
//     manifests are in config/.
package controllerruntime
