// Package lint checks a kernel-module (kmod) image, or the tree it is built
// from, for what breaks loading on a node of one kernel: what a user of
// KMM otherwise learns at load time, on the node.
//
// Tree lints an unpacked image (a directory holding
// <dirName>/lib/modules/<kernel>, such as the root of a Dockerfile build's
// last stage); Image pulls an image with registry.Client.Extract (contained
// and verified) and lints what it holds. Both return a Report: every
// module seen (its vermagic, dependencies, firmware and signature) and
// the Findings, each naming the file and the Rule it breaks:
//
//   - RuleLayout: no module under <dirName>/lib/modules/<kernel> (the
//     finding says where the image keeps its modules instead), or two
//     files for one module;
//   - RuleUnreadable: a module file that cannot be read as a module;
//   - RuleVermagicRelease: a module built for another kernel than the
//     directory it lies in names, or with no vermagic;
//   - RuleVermagicFlags: a module built with other kernel flags than the
//     reference (WithVermagic, or WithKernelTree: the kernel's own modules)
//     or, without one, than the other modules of the image;
//   - RuleDepmodMissing and RuleDepmodStale: depmod's files absent, or
//     not what kmmkit's depmod (byte-identical to kmod's) writes for the
//     tree now;
//   - RuleDependency: a module needs a module the image does not hold and
//     does not take from the host (KMM's absolute link to the node's
//     /lib/modules/<kernel>, or WithHostModules), a dependency cycle, or a
//     symbol whose version (CRC) disagrees with the module that exports it;
//   - RuleModuleMissing: the module a Module loads is not in the image;
//   - RuleFirmwareMissing: firmware a module declares (MODULE_FIRMWARE)
//     is not under the firmware path;
//   - RuleUnsigned and RuleSignature: WithSigned asks for signed modules,
//     and one is not signed, or is signed by another key.
//
// Modules are read with depmod/modfile, the indexes compared with what
// package depmod writes, the kernel's vermagic taken from its in-tree
// modules as loader/node does; nothing here parses a module itself.
//
// FromRecord takes the settings from a resolved kernel mapping
// (kernelmap.Record: dirName, firmware path, module names, signing), so a
// builder that has just pushed an image, or a reconciler that found one,
// lints it in one call.
package lint
