package identity

// Day-2 keys: KMM's ordered upgrade and its device plugin. For the zero
// Domain they are KMM's byte for byte:
//
//	version-module (admin)   kmm.node.kubernetes.io/version-module.<ns>.<name>
//	version-worker-pod       beta.kmm.node.kubernetes.io/version-worker-pod.<ns>.<name>
//	version-schedule-pod     beta.kmm.node.kubernetes.io/version-schedule-pod.<ns>.<name>
//	device-plugin target     kmm.node.kubernetes.io/<ns>.<name>.device-plugin-target
//	device-plugin ready      kmm.node.kubernetes.io/<ns>.<name>.device-plugin-ready
//	Pod role                 kmm.node.kubernetes.io/role
//
// An embedder's are D/version-module.<kind>.<ns>.<name>,
// beta.D/version-worker-pod.<kind>.<ns>.<name>, …, D/<kind>.<ns>.<name>.device-plugin-target
// and D/role.

// KMM's Pod roles (the value of RoleLabel).
const (
	// RoleDevicePlugin marks a device plugin DaemonSet and its Pods.
	RoleDevicePlugin = "device-plugin"
	// RoleDRA marks a DRA driver DaemonSet and its Pods.
	RoleDRA = "dra"
	// RoleModuleLoader marks KMM's legacy module-loader DaemonSets.
	RoleModuleLoader = "module-loader"
)

// VersionModuleLabel is the node label an administrator sets to move a
// node to a version of o's module (ordered upgrade): KMM's
// kmm.node.kubernetes.io/version-module.<ns>.<name>.
func (o Owner) VersionModuleLabel() string {
	return o.Domain.prefix() + "/" + o.prefixedKey("version-module.")
}

// VersionWorkerPodLabel is the internal node label that says which
// version of o's module the loader may load there: KMM's
// beta.kmm.node.kubernetes.io/version-worker-pod.<ns>.<name>.
func (o Owner) VersionWorkerPodLabel() string {
	return "beta." + o.Domain.prefix() + "/" + o.prefixedKey("version-worker-pod.")
}

// VersionSchedulePodLabel is the internal node label that says which
// version's device plugin may run there: KMM's
// beta.kmm.node.kubernetes.io/version-schedule-pod.<ns>.<name>.
func (o Owner) VersionSchedulePodLabel() string {
	return "beta." + o.Domain.prefix() + "/" + o.prefixedKey("version-schedule-pod.")
}

// DevicePluginTargetLabel is the node label on the nodes where o's device
// plugin may run (selected and schedulable for o's tolerations).
func (o Owner) DevicePluginTargetLabel() string { return o.NodeLabel(".device-plugin-target") }

// DevicePluginReadyLabel is the node label set while o's device plugin
// Pod is Ready on the node.
func (o Owner) DevicePluginReadyLabel() string { return o.NodeLabel(".device-plugin-ready") }

// DRAReadyLabel is the node label set while o's DRA driver Pod is Ready
// on the node.
func (o Owner) DRAReadyLabel() string { return o.NodeLabel(".dra-ready") }

// RoleLabel is the key of the Pod and DaemonSet label that carries a role
// (RoleDevicePlugin, RoleDRA): KMM's kmm.node.kubernetes.io/role, or D/role.
func (o Owner) RoleLabel() string { return o.Domain.prefix() + "/role" }

// prefixedKey is the name part pre+<ns>.<name> (KMM) or
// pre+<kind>.<ns>.<name>, cut with a hash of the whole identity when
// longer than 63 characters.
func (o Owner) prefixedKey(pre string) string {
	if o.Domain.IsKMM() {
		return fit(pre+o.Namespace+"."+o.Name, "", pre+o.Namespace+"/"+o.Name)
	}
	scope := o.Domain.lowerKind()
	if o.Namespace != "" {
		scope += "." + o.Namespace
	}
	return fit(pre+scope+"."+o.Name, "", pre+o.hashInput())
}
