package v1beta1

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilversion "k8s.io/apimachinery/pkg/util/version"

	"github.com/kmmkit/kmmkit/internal/envsubst"
	"github.com/kmmkit/kmmkit/internal/kvars"
	"github.com/kmmkit/kmmkit/internal/modprobe"
)

// MaxNameNamespaceLength is the longest name+namespace KMM accepts for a
// Module: the pair must fit the 63-character name part of the
// version-schedule-pod.<namespace>.<name> label KMM uses.
const MaxNameNamespaceLength = 41

// hostPathPrefixes are the only host directories device plugin and DRA
// volumes may mount.
var hostPathPrefixes = []string{"/dev", "/sys", "/var", "/opt", "/run"}

// tagPattern is the OCI distribution tag grammar.
var tagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

// MinDRAKubernetesVersion is the oldest Kubernetes whose API server
// serves what spec.dra needs (resource.k8s.io/v1), as KMM's webhook
// requires.
const MinDRAKubernetesVersion = "1.34"

// ValidateOption configures Validate, ValidateUpdate and ValidateSpec.
//
// +kubebuilder:object:generate=false
type ValidateOption func(*validateOptions)

type validateOptions struct {
	kubeVersion string
	noDRA       bool
}

// WithoutDRA refuses spec.dra, naming the field: for a consumer that runs
// no DRA driver (kmmkit's Reconciler, which passes it), so that a spec
// asking for one is reported invalid instead of silently ignored. KMM's
// own rules accept spec.dra; without this option Validate does too.
func WithoutDRA() ValidateOption {
	return func(o *validateOptions) { o.noDRA = true }
}

// WithKubernetesVersion applies the rules that depend on the cluster's
// Kubernetes version, as KMM's webhook does with the version of the
// cluster it serves: spec.dra needs MinDRAKubernetesVersion or later. v is
// the API server's version, as discovery reports it (version.Info's
// GitVersion, such as "v1.33.4"), or "1.33". Without this option those
// rules are skipped, as KMM's hub webhook skips them for a spoke it does
// not know.
func WithKubernetesVersion(v string) ValidateOption {
	return func(o *validateOptions) { o.kubeVersion = v }
}

func collectValidateOptions(opts []ValidateOption) validateOptions {
	var o validateOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

// Validate applies to a Module every rule of KMM's admission webhook and of
// its CRD schema, and returns all problems at once, each with its field
// path. An empty list means the Module is valid.
func Validate(m *Module, opts ...ValidateOption) field.ErrorList {
	var errs field.ErrorList
	meta := field.NewPath("metadata")
	if m.Name == "" && m.GenerateName == "" {
		errs = append(errs, field.Required(meta.Child("name"), "a Module needs a name"))
	}
	if n := len(m.Name) + len(m.Namespace); n > MaxNameNamespaceLength {
		errs = append(errs, field.Invalid(meta.Child("name"), m.Name,
			fmt.Sprintf("name and namespace together are %d characters; at most %d are allowed", n, MaxNameNamespaceLength)))
	}
	return append(errs, ValidateSpec(&m.Spec, field.NewPath("spec"), opts...)...)
}

// ValidateUpdate validates newer as Validate does, and also the rules that
// compare it with the stored older Module.
func ValidateUpdate(older, newer *Module, opts ...ValidateOption) field.ErrorList {
	errs := Validate(newer, opts...)
	return append(errs, validateVersionChange(&older.Spec, &newer.Spec, field.NewPath("spec"))...)
}

// ValidateSpecUpdate validates a ModuleSpec found at fldPath as
// ValidateSpec does, and also the rules of KMM's webhook that compare it
// with the stored older spec: moduleLoader.container.version can be
// neither added nor removed (the ordered upgrade would unload every node
// without a version label). Operators that embed ModuleSpec call it on
// updates of their resources.
func ValidateSpecUpdate(older, newer *ModuleSpec, fldPath *field.Path, opts ...ValidateOption) field.ErrorList {
	errs := ValidateSpec(newer, fldPath, opts...)
	return append(errs, validateVersionChange(older, newer, fldPath)...)
}

// validateVersionChange refuses a version that appears or goes.
func validateVersionChange(older, newer *ModuleSpec, fldPath *field.Path) field.ErrorList {
	var oldVersion, newVersion string
	if older.ModuleLoader != nil {
		oldVersion = older.ModuleLoader.Container.Version
	}
	if newer.ModuleLoader != nil {
		newVersion = newer.ModuleLoader.Container.Version
	}
	if (oldVersion == "") == (newVersion == "") {
		return nil
	}
	return field.ErrorList{field.Forbidden(fldPath.Child("moduleLoader", "container", "version"),
		fmt.Sprintf("cannot change from %q to %q: a version can be neither added to nor removed from an existing Module; please delete the Module and create it again", oldVersion, newVersion))}
}

// ValidateSpec validates a ModuleSpec found at fldPath. Operators that embed
// ModuleSpec in their own resources call it with their own path.
func ValidateSpec(spec *ModuleSpec, fldPath *field.Path, opts ...ValidateOption) field.ErrorList {
	o := collectValidateOptions(opts)
	var errs field.ErrorList
	if spec.Selector == nil {
		errs = append(errs, field.Required(fldPath.Child("selector"), "use {} to select every node"))
	}
	errs = append(errs, validateLabels(spec.Selector, fldPath.Child("selector"))...)
	errs = append(errs, validateTolerations(spec.Tolerations, fldPath.Child("tolerations"))...)
	if spec.ImageRepoSecret != nil && spec.ImageRepoSecret.Name == "" {
		errs = append(errs, field.Required(fldPath.Child("imageRepoSecret", "name"), ""))
	}
	if spec.ImageRebuildTriggerGeneration != nil && *spec.ImageRebuildTriggerGeneration < 0 {
		errs = append(errs, field.Invalid(fldPath.Child("imageRebuildTriggerGeneration"), *spec.ImageRebuildTriggerGeneration, "must not be negative"))
	}
	if spec.DRA != nil && spec.DevicePlugin != nil {
		errs = append(errs, field.Forbidden(fldPath.Child("dra"), "spec.dra and spec.devicePlugin are mutually exclusive"))
	}
	if spec.DevicePlugin != nil {
		errs = append(errs, validateDevicePlugin(spec.DevicePlugin, fldPath.Child("devicePlugin"))...)
	}
	if spec.DRA != nil && o.noDRA {
		errs = append(errs, field.Forbidden(fldPath.Child("dra"),
			"kmmkit runs no DRA driver: remove "+fldPath.Child("dra").String()+" (use "+fldPath.Child("devicePlugin").String()+
				" for a device plugin), or let KMM's operator drive this Module"))
	}
	if spec.DRA != nil {
		errs = append(errs, validateDRAVersion(o.kubeVersion, fldPath.Child("dra"))...)
		errs = append(errs, validateDRA(spec.DRA, fldPath.Child("dra"))...)
	}
	if spec.ModuleLoader != nil {
		errs = append(errs, validateContainer(&spec.ModuleLoader.Container, fldPath.Child("moduleLoader", "container"))...)
	}
	return errs
}

// validateContainer checks moduleLoader.container and its mappings.
func validateContainer(c *ModuleLoaderContainerSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if c.InTreeModulesToRemove != nil && c.InTreeModuleToRemove != "" {
		errs = append(errs, field.Forbidden(p.Child("inTreeModuleToRemove"), "inTreeModulesToRemove and inTreeModuleToRemove are mutually exclusive"))
	}
	errs = append(errs, validateModuleNames(c.InTreeModulesToRemove, p.Child("inTreeModulesToRemove"))...)
	errs = append(errs, validatePullPolicy(c.ImagePullPolicy, p.Child("imagePullPolicy"))...)
	if c.ContainerImage != "" {
		errs = append(errs, validateImage(c.ContainerImage, p.Child("containerImage"))...)
	}
	dirName := c.Modprobe.DirName
	if dirName == "" {
		dirName = DefaultDirName
	}
	errs = append(errs, validateModprobe(&c.Modprobe, p.Child("modprobe"))...)
	if c.Build != nil {
		errs = append(errs, validateBuild(c.Build, p.Child("build"))...)
	}
	if c.Sign != nil {
		errs = append(errs, validateSign(c.Sign, dirName, p.Child("sign"))...)
	}
	if len(c.KernelMappings) == 0 {
		errs = append(errs, field.Required(p.Child("kernelMappings"), "at least one kernel mapping is needed"))
	}
	for i := range c.KernelMappings {
		errs = append(errs, validateMapping(&c.KernelMappings[i], c, dirName, p.Child("kernelMappings").Index(i))...)
	}
	return errs
}

// validateMapping checks one kernel mapping against itself and the
// module-wide settings.
func validateMapping(km *KernelMapping, c *ModuleLoaderContainerSpec, dirName string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch {
	case km.Regexp != "" && km.Literal != "":
		errs = append(errs, field.Forbidden(p.Child("regexp"), "regexp and literal are mutually exclusive"))
	case km.Regexp == "" && km.Literal == "":
		errs = append(errs, field.Required(p.Child("regexp"), "regexp or literal must be set"))
	case km.Regexp != "":
		if _, err := regexp.Compile(km.Regexp); err != nil {
			errs = append(errs, field.Invalid(p.Child("regexp"), km.Regexp, fmt.Sprintf("does not compile: %v", err)))
		}
	}
	switch {
	case km.ContainerImage == "" && c.ContainerImage == "":
		errs = append(errs, field.Required(p.Child("containerImage"), "must be set when the container has no containerImage"))
	case km.ContainerImage != "":
		errs = append(errs, validateImage(km.ContainerImage, p.Child("containerImage"))...)
	}
	if km.InTreeModulesToRemove != nil && km.InTreeModuleToRemove != "" {
		errs = append(errs, field.Forbidden(p.Child("inTreeModuleToRemove"), "inTreeModulesToRemove and inTreeModuleToRemove are mutually exclusive"))
	}
	if km.InTreeModuleToRemove != "" && c.InTreeModulesToRemove != nil {
		errs = append(errs, field.Forbidden(p.Child("inTreeModuleToRemove"), "cannot be used when the container uses inTreeModulesToRemove"))
	}
	if km.InTreeModulesToRemove != nil && c.InTreeModuleToRemove != "" {
		errs = append(errs, field.Forbidden(p.Child("inTreeModulesToRemove"), "cannot be used when the container uses inTreeModuleToRemove"))
	}
	errs = append(errs, validateModuleNames(km.InTreeModulesToRemove, p.Child("inTreeModulesToRemove"))...)
	if km.Build != nil {
		errs = append(errs, validateBuild(km.Build, p.Child("build"))...)
	}
	if km.Sign != nil {
		errs = append(errs, validateSign(km.Sign, dirName, p.Child("sign"))...)
	}
	return errs
}

// validateModprobe applies KMM's modprobe and loading-order rules.
func validateModprobe(m *ModprobeSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if m.ModuleName != "" {
		if m.RawArgs != nil && (len(m.RawArgs.Load) > 0 || len(m.RawArgs.Unload) > 0) {
			errs = append(errs, field.Forbidden(p.Child("rawArgs"), "rawArgs cannot be set when moduleName is set"))
		}
	} else {
		if m.RawArgs == nil || len(m.RawArgs.Load) == 0 {
			errs = append(errs, field.Required(p.Child("rawArgs", "load"), "rawArgs.load is required when moduleName is not set"))
		}
		if m.RawArgs == nil || len(m.RawArgs.Unload) == 0 {
			errs = append(errs, field.Required(p.Child("rawArgs", "unload"), "rawArgs.unload is required when moduleName is not set"))
		}
	}
	// KMM's CRD: args and rawArgs are optional, and so is each of their
	// lists, but a list that is present holds at least one item.
	for _, a := range []struct {
		name string
		args *ModprobeArgs
	}{{"args", m.Args}, {"rawArgs", m.RawArgs}} {
		if a.args == nil {
			continue
		}
		if a.args.Load != nil && len(a.args.Load) == 0 {
			errs = append(errs, field.Invalid(p.Child(a.name, "load"), a.args.Load, "must have at least one item when set"))
		}
		if a.args.Unload != nil && len(a.args.Unload) == 0 {
			errs = append(errs, field.Invalid(p.Child(a.name, "unload"), a.args.Unload, "must have at least one item when set"))
		}
	}
	if m.ModuleName != "" && strings.ContainsAny(m.ModuleName, "/ \t\n") {
		errs = append(errs, field.Invalid(p.Child("moduleName"), m.ModuleName, "must be a module name, not a path"))
	}
	errs = append(errs, validateImagePath(m.DirName, p.Child("dirName"), true)...)
	errs = append(errs, validateImagePath(m.FirmwarePath, p.Child("firmwarePath"), false)...)
	if (m.RawArgs != nil && len(m.RawArgs.Load) > 0) || (m.RawArgs == nil && m.ModuleName != "") {
		errs = append(errs, validateModprobeCommand(m, false, p)...)
	}
	if (m.RawArgs != nil && len(m.RawArgs.Unload) > 0) || (m.RawArgs == nil && m.ModuleName != "") {
		errs = append(errs, validateModprobeCommand(m, true, p)...)
	}
	// An empty list that is present counts as set, as in KMM's webhook: it
	// is refused for having fewer than two modules.
	if m.ModulesLoadingOrder != nil {
		lo := p.Child("modulesLoadingOrder")
		if len(m.ModulesLoadingOrder) < 2 {
			errs = append(errs, field.Invalid(lo, m.ModulesLoadingOrder, "must hold at least two modules: moduleName and what it depends on"))
		}
		if m.ModuleName == "" {
			errs = append(errs, field.Required(p.Child("moduleName"), "moduleName is required when modulesLoadingOrder is set"))
		} else if len(m.ModulesLoadingOrder) > 0 && m.ModulesLoadingOrder[0] != m.ModuleName {
			errs = append(errs, field.Invalid(lo.Index(0), m.ModulesLoadingOrder[0], fmt.Sprintf("the first entry must be moduleName %q", m.ModuleName)))
		}
		seen := sets.New[string]()
		for i, name := range m.ModulesLoadingOrder {
			if seen.Has(name) {
				errs = append(errs, field.Duplicate(lo.Index(i), name))
			}
			seen.Insert(name)
		}
	}
	return errs
}

// validateImagePath checks a directory of the kmod image (modprobe.dirName
// or firmwarePath): absolute and without "..", so that what the worker
// copies, loads and, on unload, deletes stays inside the image and the
// host directory it is copied to.
func validateImagePath(v string, p *field.Path, rootOK bool) field.ErrorList {
	switch {
	case v == "":
		return nil
	case !path.IsAbs(v):
		return field.ErrorList{field.Invalid(p, v, "must be an absolute path in the image")}
	case slices.Contains(strings.Split(v, "/"), ".."):
		return field.ErrorList{field.Invalid(p, v, `must not contain "..": the path must stay inside the image`)}
	case !rootOK && path.Clean(v) == "/":
		return field.ErrorList{field.Invalid(p, v, "must name a directory in the image, not the image's root")}
	}
	return nil
}

// validateModprobeCommand checks the modprobe command a worker runs to
// load or unload (see ModprobeSpec.LoadArgs): every option is one the
// native worker carries out, the command loads or removes named modules,
// and -d names where the worker finds the image's dirName. Each problem
// names the field its word comes from.
func validateModprobeCommand(m *ModprobeSpec, unload bool, p *field.Path) field.ErrorList {
	argv, src := m.argv(unload, p)
	cmd, perrs := modprobe.Parse(argv)
	var errs field.ErrorList
	for _, e := range perrs {
		errs = append(errs, field.Invalid(src[e.At], argv[e.At], e.Error()))
	}
	action, list := "load", p.Child("args", "load")
	if unload {
		action, list = "unload", p.Child("args", "unload")
	}
	raw := m.RawArgs != nil
	if raw {
		list = p.Child("rawArgs", action)
	}
	// user tells whether word i comes from args or rawArgs, rather than
	// from the fields that have their own rules.
	user := func(i int) bool {
		s := src[i].String()
		return strings.HasPrefix(s, list.String()+"[")
	}
	switch {
	case !unload && cmd.Remove:
		errs = append(errs, field.Invalid(src[cmd.RemoveAt], argv[cmd.RemoveAt], "-r removes modules: the load arguments must load"))
	case unload && !cmd.Remove:
		errs = append(errs, field.Invalid(list, argv, "the unload arguments must remove modules: add -r"))
	}
	if len(cmd.Names) == 0 {
		errs = append(errs, field.Required(list, fmt.Sprintf("names no module to %s", action)))
	}
	for _, n := range cmd.Names {
		switch {
		case !unload && !raw && !cmd.All && user(n.At):
			errs = append(errs, field.Invalid(src[n.At], n.Value, fmt.Sprintf("args may hold only options: modprobe would load %q instead of moduleName %q (use -a to load several modules)", n.Value, m.ModuleName)))
		case cmd.All && strings.HasPrefix(src[n.At].String(), p.Child("parameters").String()+"["):
			errs = append(errs, field.Invalid(src[n.At], n.Value, "parameters cannot be used with -a: modprobe -a takes every word as a module name"))
		case !user(n.At):
		case strings.HasPrefix(n.Value, "/") || strings.HasPrefix(n.Value, "./"):
			errs = append(errs, field.Invalid(src[n.At], n.Value, "loading a module file by its path is not supported: name the module, which is looked up in the module tree"))
		case strings.ContainsAny(n.Value, "/= \t\n"):
			errs = append(errs, field.Invalid(src[n.At], n.Value, "must be a module name"))
		}
	}
	if cmd.DirAt >= 0 {
		want := path.Join(KMMSharedDir, m.dirName())
		if path.Clean(cmd.Dir) != want {
			errs = append(errs, field.Invalid(src[cmd.DirAt], cmd.Dir, fmt.Sprintf("-d must be %s: the worker finds modprobe.dirName %s of the image there, as KMM's worker does", want, m.dirName())))
		}
	}
	return errs
}

// validateBuild checks the fields KMM's CRD requires of a build.
func validateBuild(b *Build, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if b.DockerfileConfigMap == nil || b.DockerfileConfigMap.Name == "" {
		errs = append(errs, field.Required(p.Child("dockerfileConfigMap", "name"), "a build needs the ConfigMap that holds its Dockerfile"))
	}
	names := sets.New[string]()
	for i, a := range b.BuildArgs {
		ap := p.Child("buildArgs").Index(i).Child("name")
		switch {
		case a.Name == "":
			errs = append(errs, field.Required(ap, ""))
		case names.Has(a.Name):
			errs = append(errs, field.Duplicate(ap, a.Name))
		}
		names.Insert(a.Name)
	}
	for i, s := range b.Secrets {
		if s.Name == "" {
			errs = append(errs, field.Required(p.Child("secrets").Index(i).Child("name"), ""))
		}
	}
	if b.KanikoParams != nil && b.KanikoParams.Tag != "" && !tagPattern.MatchString(b.KanikoParams.Tag) {
		errs = append(errs, field.Invalid(p.Child("kanikoParams", "tag"), b.KanikoParams.Tag, "not a valid image tag"))
	}
	return append(errs, validateLabels(b.Selector, p.Child("selector"))...)
}

// validateSign checks a signing section: secrets present, and every file to
// sign under modprobe.dirName.
func validateSign(s *Sign, dirName string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if s.KeySecret == nil || s.KeySecret.Name == "" {
		errs = append(errs, field.Required(p.Child("keySecret", "name"), "signing needs the Secret that holds the private key"))
	}
	if s.CertSecret == nil || s.CertSecret.Name == "" {
		errs = append(errs, field.Required(p.Child("certSecret", "name"), "signing needs the Secret that holds the certificate"))
	}
	if s.UnsignedImage != "" {
		errs = append(errs, validateImage(s.UnsignedImage, p.Child("unsignedImage"))...)
	}
	if len(s.FilesToSign) == 0 {
		errs = append(errs, field.Required(p.Child("filesToSign"), "at least one file to sign is needed"))
	}
	prefix := strings.TrimSuffix(dirName, "/") + "/"
	for i, f := range s.FilesToSign {
		fp := p.Child("filesToSign").Index(i)
		if !strings.HasPrefix(f, prefix) {
			errs = append(errs, field.Invalid(fp, f, fmt.Sprintf("must be under modprobe.dirName %q", dirName)))
		}
		errs = append(errs, validateTemplate(f, fp)...)
	}
	return errs
}

// validateImage checks an image template: its variables and that it names
// a tag or a digest.
func validateImage(image string, p *field.Path) field.ErrorList {
	return append(validateTemplate(image, p), ValidateImageReference(image, p)...)
}

// validateTemplate checks that a template uses only known variables and is
// well formed.
func validateTemplate(s string, p *field.Path) field.ErrorList {
	_, err := envsubst.Expand(s, func(name string) (string, bool) {
		return "x", kvars.Known(name)
	})
	if err != nil {
		return field.ErrorList{field.Invalid(p, s, fmt.Sprintf("%v (known variables: %s)", err, strings.Join(kvars.All(), ", ")))}
	}
	return nil
}

// validateModuleNames checks a list of kernel module names.
func validateModuleNames(names []string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, n := range names {
		if n == "" || strings.ContainsAny(n, "/ \t\n") {
			errs = append(errs, field.Invalid(p.Index(i), n, "must be a kernel module name"))
		}
	}
	return errs
}

// validatePullPolicy checks an image pull policy against the CRD enum.
func validatePullPolicy(pp corev1.PullPolicy, p *field.Path) field.ErrorList {
	switch pp {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		return nil
	}
	return field.ErrorList{field.NotSupported(p, pp, []corev1.PullPolicy{corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever})}
}

// validateLabels checks that a selector's keys and values are label keys and
// values, so it can match a node at all.
func validateLabels(labels map[string]string, p *field.Path) field.ErrorList {
	return metav1validation.ValidateLabels(labels, p)
}

// validateTolerations applies KMM's toleration rules, which are those of
// core Kubernetes.
func validateTolerations(tolerations []corev1.Toleration, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, t := range tolerations {
		tp := p.Index(i)
		if t.Key != "" {
			for _, msg := range validation.IsQualifiedName(t.Key) {
				errs = append(errs, field.Invalid(tp.Child("key"), t.Key, msg))
			}
		}
		if t.Key == "" && t.Operator != corev1.TolerationOpExists {
			errs = append(errs, field.Invalid(tp.Child("operator"), t.Operator, "operator must be Exists when key is empty, which means \"match all values and all keys\""))
		}
		if t.TolerationSeconds != nil && t.Effect != corev1.TaintEffectNoExecute {
			errs = append(errs, field.Invalid(tp.Child("effect"), t.Effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"))
		}
		switch t.Operator {
		case corev1.TolerationOpEqual, "":
			for _, msg := range validation.IsValidLabelValue(t.Value) {
				errs = append(errs, field.Invalid(tp.Child("value"), t.Value, msg))
			}
		case corev1.TolerationOpExists:
			if t.Value != "" {
				errs = append(errs, field.Invalid(tp.Child("value"), t.Value, "value must be empty when `operator` is 'Exists'"))
			}
		default:
			errs = append(errs, field.NotSupported(tp.Child("operator"), t.Operator, []corev1.TolerationOperator{corev1.TolerationOpEqual, corev1.TolerationOpExists}))
		}
		switch t.Effect {
		case "", corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			errs = append(errs, field.NotSupported(tp.Child("effect"), t.Effect, []corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute}))
		}
	}
	return errs
}

// validateDevicePlugin checks the device plugin section.
func validateDevicePlugin(dp *DevicePluginSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, validatePluginContainer(&dp.Container, p.Child("container"))...)
	if dp.InitContainer != nil {
		errs = append(errs, validatePluginContainer(dp.InitContainer, p.Child("initContainer"))...)
	}
	return append(errs, validateHostPathVolumes(dp.Volumes, p.Child("volumes"))...)
}

// validateDRA checks the DRA section.
func validateDRA(d *DRASpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, validatePluginContainer(&d.Container, p.Child("container"))...)
	if d.InitContainer != nil {
		errs = append(errs, validatePluginContainer(d.InitContainer, p.Child("initContainer"))...)
	}
	errs = append(errs, validateHostPathVolumes(d.Volumes, p.Child("volumes"))...)
	if d.DriverName == "" {
		errs = append(errs, field.Required(p.Child("driverName"), ""))
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(d.DriverName) {
			errs = append(errs, field.Invalid(p.Child("driverName"), d.DriverName, msg))
		}
	}
	names := sets.New[string]()
	for i, dc := range d.DeviceClasses {
		np := p.Child("deviceClasses").Index(i).Child("name")
		switch {
		case dc.Name == "":
			errs = append(errs, field.Required(np, ""))
		case names.Has(dc.Name):
			errs = append(errs, field.Duplicate(np, dc.Name))
		default:
			for _, msg := range validation.IsDNS1123Subdomain(dc.Name) {
				errs = append(errs, field.Invalid(np, dc.Name, msg))
			}
		}
		names.Insert(dc.Name)
		if len(dc.Selectors) > 32 {
			errs = append(errs, field.TooMany(p.Child("deviceClasses").Index(i).Child("selectors"), len(dc.Selectors), 32))
		}
		if len(dc.Config) > 32 {
			errs = append(errs, field.TooMany(p.Child("deviceClasses").Index(i).Child("config"), len(dc.Config), 32))
		}
	}
	return errs
}

// validateDRAVersion refuses spec.dra on a cluster older than
// MinDRAKubernetesVersion; with no version it checks nothing.
func validateDRAVersion(kubeVersion string, p *field.Path) field.ErrorList {
	if kubeVersion == "" {
		return nil
	}
	v, err := utilversion.ParseGeneric(kubeVersion)
	if err != nil {
		return field.ErrorList{field.InternalError(p, fmt.Errorf("cannot tell whether the cluster serves DRA: Kubernetes version %q: %w", kubeVersion, err))}
	}
	if !v.AtLeast(utilversion.MustParseGeneric(MinDRAKubernetesVersion)) {
		return field.ErrorList{field.Forbidden(p, fmt.Sprintf("spec.dra requires Kubernetes %s or later; the cluster runs %d.%d", MinDRAKubernetesVersion, v.Major(), v.Minor()))}
	}
	return nil
}

// validatePluginContainer checks a device plugin or DRA container.
func validatePluginContainer(c *CommonContainerSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if c.Image == "" {
		errs = append(errs, field.Required(p.Child("image"), ""))
	}
	return append(errs, validatePullPolicy(c.ImagePullPolicy, p.Child("imagePullPolicy"))...)
}

// validateHostPathVolumes allows hostPath volumes only under the host
// directories KMM allows.
func validateHostPathVolumes(volumes []corev1.Volume, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, v := range volumes {
		if v.HostPath == nil {
			continue
		}
		if !underAny(v.HostPath.Path, hostPathPrefixes) {
			errs = append(errs, field.Invalid(p.Index(i).Child("hostPath", "path"), v.HostPath.Path,
				"hostPath volumes must be under one of "+strings.Join(hostPathPrefixes, ", ")))
		}
	}
	return errs
}

// underAny reports whether the absolute path p is one of dirs or below one.
func underAny(p string, dirs []string) bool {
	if !path.IsAbs(p) {
		return false
	}
	clean := path.Clean(p)
	for _, d := range dirs {
		if clean == d || strings.HasPrefix(clean, d+"/") {
			return true
		}
	}
	return false
}
