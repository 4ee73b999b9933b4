// Package examples holds runnable examples of kmmkit and the KMM Module
// manifests they use (modules/):
//
//   - quickstart: the whole pipeline on an embedded registry and an
//     in-memory cluster (go run ./examples/quickstart), or on a real cluster
//     with --kubeconfig;
//   - client-go: an operator with plain informers and a workqueue;
//   - controller-runtime: an operator whose own CRD embeds a ModuleSpec.
package examples
