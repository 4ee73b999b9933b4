// Package openshiftrbac holds only the RBAC markers of the OpenShift
// build backend (builder/openshift), which the drop-in operator uses with
// --builder=openshift: it creates, lists and deletes build.openshift.io
// Builds. config/rbac/openshift_builds_role.yaml is generated from them,
// as a role of its own, bound only where OpenShift serves Builds.
//
// +kubebuilder:rbac:groups=build.openshift.io,resources=builds,verbs=list;create;delete
package openshiftrbac
