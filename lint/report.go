package lint

import (
	"fmt"
	"strings"

	"github.com/kmmkit/kmmkit/builder/signfile"
	"github.com/kmmkit/kmmkit/reason"
)

// Rule names what a finding breaks.
type Rule string

// The rules. Each constant's doc says what breaks and what to do.
const (
	// RuleLayout: no module lies under <dirName>/lib/modules/<kernel>,
	// where the worker looks for them (the finding says where the image
	// keeps them instead), or one module has two files. Move the
	// modules, or fix modprobe.dirName or the kernel mapping.
	RuleLayout Rule = "layout"
	// RuleUnreadable: a file named like a module cannot be read as one
	// (not ELF, truncated, over the size limits).
	RuleUnreadable Rule = "unreadable"
	// RuleVermagicRelease: the module was built for another kernel than
	// the directory it lies in names, or has no vermagic; the kernel
	// refuses it. Build it for that kernel, or put it under its own.
	RuleVermagicRelease Rule = "vermagic-release"
	// RuleVermagicFlags: same release, other flags (SMP, preempt,
	// mod_unload, modversions, …) than the kernel's, or than the image's
	// other modules: built with another kernel configuration. Build it
	// against the kernel's own headers.
	RuleVermagicFlags Rule = "vermagic-flags"
	// RuleDepmodMissing: depmod's files (modules.dep, modules.dep.bin, …)
	// are absent: run depmod -b <dirName> <kernel> at the end of the
	// build.
	RuleDepmodMissing Rule = "depmod-missing"
	// RuleDepmodStale: one of depmod's files is not what depmod writes
	// for the tree now (modules were added, removed or rebuilt after
	// depmod ran). Run depmod last.
	RuleDepmodStale Rule = "depmod-stale"
	// RuleDependency: a module needs a module that the image does not
	// hold and does not take from the host, its dependencies form a
	// cycle, or it uses a symbol whose version (CRC) differs from the one
	// the exporting module has: the kernel refuses to load it.
	RuleDependency Rule = "dependency"
	// RuleModuleMissing: the module the Module loads (moduleName, or one
	// of modulesLoadingOrder) is neither a module of the image nor an
	// alias of one.
	RuleModuleMissing Rule = "module-missing"
	// RuleFirmwareMissing: a module declares firmware (MODULE_FIRMWARE)
	// that is not under the image's firmware path.
	RuleFirmwareMissing Rule = "firmware-missing"
	// RuleUnsigned: signed modules were asked for and the module carries
	// no signature; a kernel that enforces signatures (Secure Boot)
	// refuses it.
	RuleUnsigned Rule = "unsigned"
	// RuleSignature: the module's signature cannot be read, or it is
	// signed by another key than the ones asked for.
	RuleSignature Rule = "signature"
)

// Finding is one problem: the file (an image path, such as
// /opt/lib/modules/6.1.0-57-amd64/extra/nic.ko) and the rule it breaks.
type Finding struct {
	// File is the image path the finding is about.
	File string `json:"file"`
	// Rule is the rule the file breaks.
	Rule Rule `json:"rule"`
	// Message says what is wrong and what to do.
	Message string `json:"message"`
}

// String is the finding on one line: "FILE: RULE: MESSAGE".
func (f Finding) String() string { return fmt.Sprintf("%s: %s: %s", f.File, f.Rule, f.Message) }

// Module is one module file of the image, as the linter read it.
type Module struct {
	// Name is the module name (from the file name, as kmod derives it).
	Name string `json:"name"`
	// Path is the image path of the file.
	Path string `json:"path"`
	// Vermagic is its vermagic.
	Vermagic string `json:"vermagic,omitempty"`
	// Depends are the modules it declares it needs (.modinfo depends).
	Depends []string `json:"depends,omitempty"`
	// Firmware are the firmware files it declares (.modinfo firmware).
	Firmware []string `json:"firmware,omitempty"`
	// Signature is its appended signature, or nil.
	Signature *signfile.Signature `json:"signature,omitempty"`
}

// Report is what the linter found in one image or tree for one kernel.
type Report struct {
	// Kernel is the kernel the image was linted for.
	Kernel string `json:"kernel"`
	// Source is the image reference or the directory.
	Source string `json:"source"`
	// Digest is the digest of the image manifest that was linted.
	Digest string `json:"digest,omitempty"`
	// ModuleDir is the image path the worker loads from:
	// <dirName>/lib/modules/<kernel>.
	ModuleDir string `json:"moduleDir"`
	// Vermagic is the kernel's vermagic the modules were checked
	// against, when one was given (WithVermagic, WithKernelTree).
	Vermagic string `json:"vermagic,omitempty"`
	// HostLinks are the links of the module directory into the node's
	// own module tree (KMM's way to use in-tree dependencies).
	HostLinks []string `json:"hostLinks,omitempty"`
	// Modules are the module files under ModuleDir, by path.
	Modules []Module `json:"modules"`
	// Findings are the problems, by file.
	Findings []Finding `json:"findings"`
	// Notes say what could not be checked, and why.
	Notes []string `json:"notes,omitempty"`
}

// OK reports whether the linter found nothing.
func (r *Report) OK() bool { return len(r.Findings) == 0 }

// Summary says in one line what the report holds, for a status
// message: the number of findings and the first few of them.
func (r *Report) Summary(max int) string {
	if r.OK() {
		return fmt.Sprintf("%d module(s) for %s, no finding", len(r.Modules), r.Kernel)
	}
	var parts []string
	for i, f := range r.Findings {
		if i == max {
			parts = append(parts, fmt.Sprintf("and %d more", len(r.Findings)-max))
			break
		}
		parts = append(parts, f.String())
	}
	return fmt.Sprintf("%d finding(s) for %s: %s", len(r.Findings), r.Kernel, strings.Join(parts, "; "))
}

// maxErrFindings bounds the findings an Error message lists.
const maxErrFindings = 5

// Err returns nil when the report is clean, else an *Error holding it:
// reason.ImageLintFailed, and a message naming the first findings'
// files and rules. A builder returns it to refuse to publish the image.
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	return &Error{Report: r}
}

// Error is a report with findings, as an error.
type Error struct {
	// Report is the linter's report.
	Report *Report
}

// Error implements error: the source, then the findings (Summary).
func (e *Error) Error() string {
	return fmt.Sprintf("%s would not load: %s", e.Report.Source, e.Report.Summary(maxErrFindings))
}

// ReasonOf implements reason.Carrier: reason.ImageLintFailed.
func (e *Error) ReasonOf() reason.Reason { return reason.ImageLintFailed }
