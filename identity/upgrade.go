package identity

// Rolling-upgrade keys (a kmmkit extension, package upgrade). KMM has
// none, so for the zero Domain they live under kmmkit's own prefix, as the
// loaded annotation does:
//
//	                     KMM (zero Domain)                        Domain{Name: D, Kind: K}
//	state label          upgrade.kmmkit.io/<ns>.<name>.state      D/k.<ns>.<name>.upgrade-state
//	skip label           upgrade.kmmkit.io/<ns>.<name>.skip       D/k.<ns>.<name>.upgrade-skip
//	record annotation    upgrade.kmmkit.io/<ns>.<name>            D/k.<ns>.<name>.upgrade

// kmmUpgradePrefix is where kmmkit keeps the rolling-upgrade keys of KMM's
// Modules.
const kmmUpgradePrefix = "upgrade.kmmkit.io/"

// UpgradeStateLabel is the node label that carries o's rolling-upgrade
// state on the node (upgrade-required, …, upgrade-done, upgrade-failed).
func (o Owner) UpgradeStateLabel() string {
	if o.Domain.IsKMM() {
		return kmmUpgradePrefix + o.key(".state")
	}
	return o.Domain.prefix() + "/" + o.key(".upgrade-state")
}

// UpgradeSkipLabel is the node label an administrator sets to "true" to
// exempt the node from o's rolling upgrades: it keeps what is loaded.
func (o Owner) UpgradeSkipLabel() string {
	if o.Domain.IsKMM() {
		return kmmUpgradePrefix + o.key(".skip")
	}
	return o.Domain.prefix() + "/" + o.key(".upgrade-skip")
}

// UpgradeAnnotation is the node annotation in which kmmkit records the
// progress of o's rolling upgrade on the node (its target, when the step
// began, whether kmmkit cordoned the node, the last message).
func (o Owner) UpgradeAnnotation() string {
	if o.Domain.IsKMM() {
		return kmmUpgradePrefix + o.key("")
	}
	return o.Domain.prefix() + "/" + o.key(".upgrade")
}
