// Command quickstart runs kmmkit's whole pipeline and prints what it did.
//
// With no flags it needs no cluster and no network: it starts an
// in-process registry and an in-memory cluster (client-go's fake
// clientset) with five nodes on three kernels, and a Module whose image
// exists for two kernels and is missing for the third. The Reconciler maps
// every kernel, finds the missing image, builds it with the native
// assembler (prebuilt modules + kmmkit's depmod, no container engine) and
// pushes it, then schedules worker Pods on the nodes; the quickstart plays
// the kubelet and runs them to success. It prints the kernels, images,
// builds and nodes with their final state.
//
//	go run ./examples/quickstart
//
// With --kubeconfig it runs against a real cluster instead: the Module CRD
// must be installed and the Module (-f, default the embedded one) must
// point at a registry the cluster reaches; worker Pods run the
// --worker-image, and the cluster's kubelets run them.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/registry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "run against this cluster instead of the embedded one")
	file := fs.String("f", "", "Module manifest for --kubeconfig (default: the quickstart's Module)")
	workerImage := fs.String("worker-image", "quay.io/kmmkit/kmm:latest", "image with the static kmm binary, for worker Pods")
	modulesDir := fs.String("modules-dir", "", "prebuilt modules for the assembler: <dir>/<kernel>/*.ko (--kubeconfig)")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if *kubeconfig == "" {
		return embedded(ctx, out, *workerImage)
	}
	return real(ctx, out, *kubeconfig, *file, *workerImage, *modulesDir)
}

// real reconciles a Module on a real cluster until it is loaded
// everywhere it should be.
func real(ctx context.Context, out io.Writer, kubeconfig, file, workerImage, modulesDir string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var mod *v1beta1.Module
	if file == "" {
		mod = quickstartModule("registry.example.com")
	} else {
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		if mod, err = v1beta1.DecodeModule(data); err != nil {
			return err
		}
	}
	if mod.Namespace == "" {
		mod.Namespace = "default"
	}
	rc, err := registry.NewClient()
	if err != nil {
		return err
	}
	opts := []kmm.Option{kmm.WithModuleClient(kmm.NewModuleClient(dyn)), kmm.WithRegistry(rc), kmm.WithWorkerPods(workerImage)}
	if modulesDir != "" {
		asm, err := assemble.New(rc, assemble.DirSource(modulesDir))
		if err != nil {
			return err
		}
		opts = append(opts, kmm.WithBuilder(asm))
	}
	r, err := kmm.NewReconciler(cs, opts...)
	if err != nil {
		return err
	}
	modules := kmm.NewModuleClient(dyn)
	if _, err := modules.Get(ctx, mod.Namespace, mod.Name); err != nil {
		if _, err := modules.Create(ctx, mod); err != nil {
			return fmt.Errorf("creating module %s/%s (is the Module CRD installed?): %w", mod.Namespace, mod.Name, err)
		}
	}
	for {
		m, err := modules.Get(ctx, mod.Namespace, mod.Name)
		if err != nil {
			return err
		}
		res, err := r.Reconcile(ctx, m)
		if err != nil {
			fmt.Fprintln(out, "reconcile:", err)
		}
		if m, err = modules.Get(ctx, mod.Namespace, mod.Name); err == nil && loadedEverywhere(m) {
			nl, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(m.Spec.Selector).String()})
			if err != nil {
				return err
			}
			return printModule(out, m, nl.Items, nil)
		}
		wait := res.RequeueAfter
		if wait == 0 || wait > 2*time.Second {
			wait = 2 * time.Second // a quickstart polls; a controller watches
		}
		select {
		case <-ctx.Done():
			if m != nil {
				_ = printModule(out, m, nil, nil)
			}
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

func loadedEverywhere(m *v1beta1.Module) bool {
	s := m.Status.ModuleLoader
	return s != nil && s.DesiredNumber > 0 && s.AvailableNumber == s.DesiredNumber && len(m.Status.Kernels) > 0
}
