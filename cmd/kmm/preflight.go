package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kmmkit/kmmkit/internal/cli"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/lint"
	"github.com/kmmkit/kmmkit/preflight"
)

var preflightHelp = help{
	Synopsis: "kmm preflight -f MODULES.yaml --kernel VERSION [--kernel VERSION ...] [flags]\n" +
		"       kmm preflight --kubeconfig FILE [-n NAMESPACE] --kernel VERSION [...] [--build [--builder assemble|buildah|kaniko]]",
	About: "Says, for each Module and each kernel, whether it would work on nodes that boot that kernel, and why: which\n" +
		"kernel mapping matches, whether the image exists for the kernel (and --platform), what the linter finds in it\n" +
		"(as kmm image lint), or, when it is missing, whether its build and signing can run (the Dockerfile ConfigMap,\n" +
		"the build secrets, the signing key and certificate, the unsigned image). With -f, the Modules, and the Secrets\n" +
		"and ConfigMaps they name, come from the manifest (pull credentials from --docker-config when given); with\n" +
		"--kubeconfig, from the cluster (Modules too, unless -f gives them). --build builds the missing images now,\n" +
		"lints them before they are published (an image that would not load fails with ImageLintFailed and is not\n" +
		"pushed to its tag), signs them when the Module asks, and pushes them, so the upgrade finds them ready:\n" +
		"--builder assemble from prebuilt modules (--modules-dir DIR/<kernel>/…), buildah from the Module's\n" +
		"Dockerfile with the buildah command here, kaniko in a build Pod of the --kubeconfig cluster.",
	Exit: "0 when every Module works on every kernel, 1 when some do not (each named with its kernel and reason),\n" +
		"2 on bad input (an unreadable manifest, bad flags) or when a registry or the cluster could not answer.",
}

// runPreflight implements "kmm preflight".
func runPreflight(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("kmm preflight", preflightHelp)
	rf := addRegistryFlags(fs)
	file := fs.String("f", "", "manifest of the Modules, with the Secrets and ConfigMaps they name (YAML or JSON; - for standard input)")
	kubeconfig := fs.String("kubeconfig", "", "read Secrets and ConfigMaps, and the Modules unless -f is given, from this cluster")
	namespace := fs.String("n", "", "the cluster's namespace to read Modules from (default: all); with -f, the namespace of objects that name none (default: default)")
	kernelTree := fs.String("kernel-tree", "", "a root holding the target kernels' own modules (lib/modules/<kernel>): the linter checks the images' vermagic flags against them")
	noLint := fs.Bool("no-lint", false, "do not lint the images that exist")
	build := fs.Bool("build", false, "build and sign missing images now, and push them")
	builderName := fs.String("builder", "assemble", "with --build: the builder: assemble (prebuilt modules), buildah (the Module's Dockerfile, built here), or kaniko (a build Pod in the --kubeconfig cluster)")
	modulesDir := fs.String("modules-dir", "", "with --builder assemble: prebuilt modules, DIR/<kernel>/… (and DIR/firmware/…)")
	buildahRoot := fs.String("buildah-root", "", "with --builder buildah: the directory of buildah's storage (default under the temporary directory)")
	buildTimeout := fs.Duration("build-timeout", time.Hour, "with --build: give up on one build after this long")
	output := fs.String("o", "table", "output format: table or json")
	verbosity := fs.Int("v", 0, "log verbosity on standard error")
	var kernels, names, hostModules, volumes stringList
	fs.Var(&volumes, "build-volume", "with --builder buildah: a bind mount for the build's RUN steps, HOST:CONTAINER[:OPTIONS] (repeatable)")
	fs.Var(&kernels, "kernel", "target kernel version, as nodes will report it (repeatable, or comma-separated)")
	fs.Var(&names, "module", "check only the Modules of this name (repeatable)")
	fs.Var(&hostModules, "host-module", "a module the images' modules may need that the node provides itself (repeatable)")
	if code, ok := cli.ParseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "kmm preflight: "+format+"\n", a...)
		return exitError
	}
	switch {
	case fs.NArg() > 0:
		return fail("unexpected argument %q", fs.Arg(0))
	case len(kernels) == 0:
		return fail("no kernel: give at least one with --kernel")
	case *file == "" && *kubeconfig == "":
		return fail("no Modules: give a manifest with -f, or a cluster with --kubeconfig")
	case *output != "table" && *output != "json":
		return fail("unknown output format %q: use table or json", *output)
	case !*build && *modulesDir != "":
		return fail("--modules-dir needs --build")
	case !*build && (*buildahRoot != "" || len(volumes) > 0):
		return fail("--buildah-root and --build-volume need --build")
	}
	for _, k := range kernels {
		if _, err := kernelmap.ParseKernel(k); err != nil {
			return fail("--kernel %q: %v", k, err)
		}
	}
	ctx = logrContext(ctx, stderr, *verbosity)

	var client, cluster kubernetes.Interface
	var mods []preflight.Module
	if *kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
		if err != nil {
			return fail("%v", err)
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return fail("%v", err)
		}
		client, cluster = cs, cs
		if *file == "" {
			dyn, err := dynamic.NewForConfig(cfg)
			if err != nil {
				return fail("%v", err)
			}
			list, err := kmm.NewModuleClient(dyn).List(ctx, *namespace)
			if err != nil {
				return fail("listing Modules: %v", err)
			}
			for i := range list {
				mods = append(mods, preflight.FromModule(&list[i]))
			}
		}
	}
	if *file != "" {
		ns := *namespace
		if ns == "" {
			ns = "default"
		}
		var objs []runtime.Object
		modules, err := readModulesAnd(*file, stdin, func(o *v1beta1.ManifestObject) field.ErrorList {
			return manifestObject(o, ns, &objs)
		})
		if err != nil {
			return fail("%v", err)
		}
		for i := range modules {
			if modules[i].Namespace == "" {
				modules[i].Namespace = ns
			}
			mods = append(mods, preflight.FromModule(&modules[i]))
		}
		if client == nil {
			client = k8sfake.NewClientset(objs...)
		}
	}
	if len(names) > 0 {
		mods = slices.DeleteFunc(mods, func(m preflight.Module) bool { return !slices.Contains(names, m.Name) })
	}
	if len(mods) == 0 {
		return fail("no Module to check")
	}

	reg, err := rf.client()
	if err != nil {
		return fail("%v", err)
	}
	lintOpts := []lint.Option{lint.WithHostModules(hostModules...)}
	if *kernelTree != "" {
		lintOpts = append(lintOpts, lint.WithKernelTree(*kernelTree))
	}
	opts := []preflight.Option{preflight.WithTLS(rf.tls()), preflight.WithBuildTimeout(*buildTimeout), preflight.WithLint(lintOpts...)}
	if p, err := rf.parsePlatform(); err != nil {
		return fail("%v", err)
	} else if p != nil {
		opts = append(opts, preflight.WithPlatform(p))
	}
	if auth, ok, err := rf.auth(); err != nil {
		return fail("%v", err)
	} else if ok {
		opts = append(opts, preflight.WithAuth(auth))
	}
	if *noLint {
		opts = append(opts, preflight.WithoutLint())
	}
	var checker *preflight.Checker
	if *build {
		spec := builderSpec{name: *builderName, modulesDir: *modulesDir, buildahRoot: *buildahRoot, volumes: volumes,
			objects: client, cluster: cluster, lint: lintOpts}
		b, cleanup, err := newBuilder(spec, reg, rf, func() *preflight.Checker { return checker })
		if err != nil {
			return fail("%v", err)
		}
		defer cleanup()
		opts = append(opts, preflight.WithBuilder(b))
	}
	if checker, err = preflight.New(client, reg, opts...); err != nil {
		return fail("%v", err)
	}
	rep := checker.Run(ctx, mods, kernels)
	if *output == "json" {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fail("%v", err)
		}
		fmt.Fprintf(stdout, "%s\n", data)
	} else {
		printPreflight(stdout, rep)
	}
	switch {
	case len(rep.With(preflight.Unknown)) > 0:
		return exitError
	case !rep.Works():
		return exitNo
	}
	return exitOK
}

// manifestObject keeps the Secrets and ConfigMaps of a manifest, as the
// API server would store them (in namespace ns when they name none, with
// a Secret's stringData merged into data); two of one kind and name are
// an error.
func manifestObject(o *v1beta1.ManifestObject, ns string, objs *[]runtime.Object) field.ErrorList {
	if o.APIVersion != "v1" {
		return nil
	}
	var obj interface {
		runtime.Object
		metav1.Object
	}
	switch o.Kind {
	case "Secret":
		obj = &corev1.Secret{}
	case "ConfigMap":
		obj = &corev1.ConfigMap{}
	default:
		return nil
	}
	if errs := o.Decode(obj); len(errs) > 0 {
		return errs
	}
	if obj.GetNamespace() == "" {
		obj.SetNamespace(ns)
	}
	for _, prev := range *objs {
		if m := prev.(metav1.Object); reflect.TypeOf(prev) == reflect.TypeOf(obj) && m.GetNamespace() == obj.GetNamespace() && m.GetName() == obj.GetName() {
			return field.ErrorList{field.Duplicate(field.NewPath("metadata", "name"), obj.GetName())}
		}
	}
	if s, ok := obj.(*corev1.Secret); ok {
		for k, v := range s.StringData {
			if s.Data == nil {
				s.Data = map[string][]byte{}
			}
			s.Data[k] = []byte(v)
		}
		s.StringData = nil
	}
	*objs = append(*objs, obj)
	return nil
}

// printPreflight prints a table: one row per Module and kernel, and under
// a failing image the linter's findings.
func printPreflight(w io.Writer, rep *preflight.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODULE\tKERNEL\tVERDICT\tREASON\tDETAIL")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Object(), r.Kernel, r.Verdict, r.Reason, r.Message)
	}
	tw.Flush()
	for _, r := range rep.Results {
		if r.Lint == nil || r.Lint.OK() {
			continue
		}
		fmt.Fprintf(w, "\n%s on %s: %s@%s:\n", r.Object(), r.Kernel, r.Image, r.Digest)
		for _, f := range r.Lint.Findings {
			fmt.Fprintf(w, "  %s\n", f)
		}
	}
	works := len(rep.With(preflight.Works))
	var parts []string
	parts = append(parts, fmt.Sprintf("%d of %d Module/kernel pair(s) work", works, len(rep.Results)))
	if n := len(rep.With(preflight.Fails)); n > 0 {
		parts = append(parts, fmt.Sprintf("%d fail", n))
	}
	if n := len(rep.With(preflight.Unknown)); n > 0 {
		parts = append(parts, fmt.Sprintf("%d could not be checked", n))
	}
	fmt.Fprintf(w, "\n%s (kernels %s)\n", strings.Join(parts, ", "), strings.Join(rep.Kernels, ", "))
}
