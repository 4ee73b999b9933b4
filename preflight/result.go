package preflight

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/lint"
	"github.com/kmmkit/kmmkit/reason"
)

// Module is one Module to check: KMM's Module (FromModule), or a
// ModuleSpec embedded in another resource, whose name and namespace fill
// MOD_NAME and MOD_NAMESPACE and where its secrets and ConfigMaps are
// read.
type Module struct {
	Namespace, Name string
	Spec            v1beta1.ModuleSpec
}

// FromModule returns the Module to check for a KMM Module.
func FromModule(m *v1beta1.Module) Module {
	return Module{Namespace: m.Namespace, Name: m.Name, Spec: *m.Spec.DeepCopy()}
}

// Verdict is whether a Module would work on a kernel.
type Verdict string

// The verdicts.
const (
	// Works: the image exists and lints clean for the kernel, or will be
	// built (reason.ImageBuildable).
	Works Verdict = "Works"
	// Fails: the Module would not work on the kernel; the reason says
	// why.
	Fails Verdict = "Fails"
	// Unknown: a registry or the API server could not answer; retry.
	Unknown Verdict = "Unknown"
)

// Mapping is the kernel mapping that matched.
type Mapping struct {
	// Index is its index in spec.moduleLoader.container.kernelMappings.
	Index int `json:"index"`
	// Literal or Regexp is what it matches.
	Literal string `json:"literal,omitempty"`
	Regexp  string `json:"regexp,omitempty"`
}

// String says which mapping it is: `kernelMappings[1] (regexp "^6\.1\.")`.
func (m *Mapping) String() string {
	if m.Literal != "" {
		return fmt.Sprintf("kernelMappings[%d] (literal %q)", m.Index, m.Literal)
	}
	return fmt.Sprintf("kernelMappings[%d] (regexp %q)", m.Index, m.Regexp)
}

// Result says whether one Module would work on one kernel, and why.
type Result struct {
	Namespace string  `json:"namespace"`
	Name      string  `json:"name"`
	Kernel    string  `json:"kernel"`
	Verdict   Verdict `json:"verdict"`
	// Reason is a constant of package reason.
	Reason reason.Reason `json:"reason"`
	// Message explains the reason, naming the kernel, image, mapping,
	// secret or ConfigMap concerned.
	Message string `json:"message"`
	// Mapping is the kernel mapping that matched, if one did.
	Mapping *Mapping `json:"mapping,omitempty"`
	// Image is the kernel's image, and Digest its manifest's digest when
	// it exists.
	Image  string `json:"image,omitempty"`
	Digest string `json:"digest,omitempty"`
	// Build and Sign tell that the mapping defines a build or signing.
	Build bool `json:"build,omitempty"`
	Sign  bool `json:"sign,omitempty"`
	// Built is set when this check built (or signed) and pushed the image.
	Built bool `json:"built,omitempty"`
	// Lint is the linter's report on the image, when it was linted.
	Lint *lint.Report `json:"lint,omitempty"`
}

// Object names the Module: "namespace/name".
func (r Result) Object() string { return r.Namespace + "/" + r.Name }

// Report is the results of a run.
type Report struct {
	// Kernels are the kernels checked, in the order given.
	Kernels []string `json:"kernels"`
	// Results has one entry per Module and kernel, by Module then kernel.
	Results []Result `json:"results"`
}

// Works reports whether every Module works on every kernel.
func (r *Report) Works() bool {
	for _, res := range r.Results {
		if res.Verdict != Works {
			return false
		}
	}
	return true
}

// With returns the results whose verdict is v.
func (r *Report) With(v Verdict) []Result {
	var out []Result
	for _, res := range r.Results {
		if res.Verdict == v {
			out = append(out, res)
		}
	}
	return out
}

// maxCauses bounds the causes a condition message lists.
const maxCauses = 10

// Condition folds the report into one condition of type condType, for an
// operator's status ("KernelUpgradeReady", say): True with
// reason.PreflightPassed when every Module works on every kernel; False
// when some fail (their shared reason, or reason.PreflightFailed, and the
// message naming each Module, kernel and why); Unknown when none fails but
// some could not be checked. The caller sets ObservedGeneration and the
// transition time (meta.SetStatusCondition does).
func (r *Report) Condition(condType string) metav1.Condition {
	fails, unknown := r.With(Fails), r.With(Unknown)
	c := metav1.Condition{Type: condType, Status: metav1.ConditionTrue, Reason: string(reason.PreflightPassed)}
	kernels := strings.Join(r.Kernels, ", ")
	if len(fails) == 0 && len(unknown) == 0 {
		var built []string
		for _, res := range r.Results {
			if res.Reason == reason.ImageBuildable {
				built = append(built, res.Object()+" on "+res.Kernel)
			}
		}
		c.Message = fmt.Sprintf("%d Module(s) checked work on kernel(s) %s", len(r.moduleNames()), kernels)
		if len(built) > 0 {
			c.Message += "; images to be built: " + strings.Join(limit(built), ", ")
		}
		return c
	}
	causes := fails
	c.Status = metav1.ConditionFalse
	if len(fails) == 0 {
		causes, c.Status = unknown, metav1.ConditionUnknown
	}
	c.Reason = string(causes[0].Reason)
	lines := make([]string, 0, len(causes))
	for _, res := range causes {
		if string(res.Reason) != c.Reason {
			c.Reason = string(reason.PreflightFailed)
		}
		lines = append(lines, fmt.Sprintf("%s on %s: %s: %s", res.Object(), res.Kernel, res.Reason, res.Message))
	}
	c.Message = fmt.Sprintf("%d of %d Module/kernel pair(s) fail on kernel(s) %s: %s", len(causes), len(r.Results), kernels, strings.Join(limit(lines), "; "))
	return c
}

// moduleNames lists the Modules of the report.
func (r *Report) moduleNames() []string {
	var out []string
	for _, res := range r.Results {
		if !slices.Contains(out, res.Object()) {
			out = append(out, res.Object())
		}
	}
	return out
}

// limit keeps the first maxCauses entries and counts the rest.
func limit(s []string) []string {
	if len(s) <= maxCauses {
		return s
	}
	return append(s[:maxCauses:maxCauses], fmt.Sprintf("and %d more", len(s)-maxCauses))
}
