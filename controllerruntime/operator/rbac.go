package operator

// What kmmkit itself needs, for owners of any kind: controller-gen's rbac
// generator reads these markers (config/rbac/role.yaml). The owner kind's
// own rules (KMM's Module: cmd/kmm-operator; an embedder's kind: the
// embedder's markers) come on top.
//
//   - nodes: the cache lists and watches them; the PodLoader gets one
//     afresh when the cache contradicts its writes, and patches the
//     .ready and .version.ready labels and the loaded annotation.
//   - pods: worker Pods (and Kaniko build Pods) are listed and watched
//     through the cache, read afresh, created and deleted; a failed
//     Kaniko build's log tail is read from pods/log.
//   - events: the Reconciler and PodLoader record events (the recorder
//     creates them, and patches a repeated one).
//   - secrets, configmaps, namespaces: one get each when needed (pull,
//     build and signing secrets; Dockerfile ConfigMaps; whether the
//     namespace of a deleted owner is terminating). With
//     Options.CachedReads they are listed and watched instead.
//
//   - daemonsets (apps): the device plugin DaemonSets of spec.devicePlugin
//     are listed, created, updated and deleted, and watched (their status
//     gives the counts and when an old version's may go).
//
// +kubebuilder:rbac:groups=apps,resources=daemonsets,verbs=list;watch;create;update;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=pods/log,verbs=get
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get
