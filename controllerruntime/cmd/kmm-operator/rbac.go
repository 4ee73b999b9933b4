package main

// What the drop-in operator needs for KMM's Module on top of what kmmkit
// needs (package operator's markers): it reads and watches Modules, adds
// and removes its finalizer (an update, and modules/finalizers where the
// OwnerReferencesPermissionEnforcement admission plugin asks for it: the
// Module owns its worker Pods), and writes their status.
//
// +kubebuilder:rbac:groups=kmm.sigs.x-k8s.io,resources=modules,verbs=get;list;watch;update
// +kubebuilder:rbac:groups=kmm.sigs.x-k8s.io,resources=modules/status,verbs=update
// +kubebuilder:rbac:groups=kmm.sigs.x-k8s.io,resources=modules/finalizers,verbs=update
