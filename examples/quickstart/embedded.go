package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/reason"
	"github.com/kmmkit/kmmkit/registry"
)

// The embedded cluster: five nodes on three kernels; the image for the
// newest kernel is missing.
var (
	kernels = []string{"6.1.0-55-amd64", "6.1.0-56-amd64", "6.1.0-57-amd64"}
	nodes   = map[string]string{
		"worker-a": kernels[0], "worker-b": kernels[1], "worker-c": kernels[1], "worker-d": kernels[2], "gpu-less": kernels[1],
	}
)

// quickstartModule is the Module the quickstart reconciles.
func quickstartModule(registryHost string) *v1beta1.Module {
	return &v1beta1.Module{
		ObjectMeta: metav1.ObjectMeta{Name: "nic", Namespace: "drivers"},
		Spec: v1beta1.ModuleSpec{
			Selector: map[string]string{"feature.node.kubernetes.io/acme-nic": "true"},
			ModuleLoader: &v1beta1.ModuleLoaderSpec{Container: v1beta1.ModuleLoaderContainerSpec{
				Modprobe:    v1beta1.ModprobeSpec{ModuleName: "acme_nic", Parameters: []string{"queues=4"}},
				RegistryTLS: v1beta1.TLSOptions{Insecure: true},
				KernelMappings: []v1beta1.KernelMapping{{
					Regexp:         `^6\.1\.0-\d+-amd64$`,
					ContainerImage: registryHost + "/acme/nic:${KERNEL_FULL_VERSION}",
					Build:          &v1beta1.Build{DockerfileConfigMap: &corev1.LocalObjectReference{Name: "nic-build"}},
				}},
			}},
		},
	}
}

// embedded runs the whole pipeline in this process.
func embedded(ctx context.Context, out io.Writer, workerImage string) error {
	// An in-process registry on loopback.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Close()
	host := lis.Addr().String()

	// Prebuilt modules for every kernel: acme_nic needs acme_core.
	src, err := os.MkdirTemp("", "kmmkit-quickstart")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	for _, k := range kernels {
		for name, m := range map[string]elftest.Module{
			"acme_core.ko": {Exports: []elftest.Export{{Name: "acme_core_register"}}, Modinfo: []string{"vermagic=" + k + " SMP mod_unload modversions "}},
			"acme_nic.ko":  {Needs: []elftest.Need{{Name: "acme_core_register"}}, Modinfo: []string{"vermagic=" + k + " SMP mod_unload modversions ", "alias=pci:v00001D0Fd0000EC20sv*sd*bc*sc*i*"}},
		} {
			p := filepath.Join(src, k, "extra", name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, m.Bytes(), 0o644); err != nil {
				return err
			}
		}
	}
	rc, err := registry.NewClient()
	if err != nil {
		return err
	}
	mod := quickstartModule(host)
	asm, err := assemble.New(rc, assemble.DirSource(src))
	if err != nil {
		return err
	}
	// The images of the two older kernels were published before.
	for _, k := range kernels[:2] {
		kk, _ := kernelmap.ParseKernel(k)
		req := builder.Request{Namespace: mod.Namespace, Module: mod.Name, Kernel: kk, Image: host + "/acme/nic:" + k, RegistryTLS: v1beta1.TLSOptions{Insecure: true}}
		if _, err := asm.Sync(ctx, req); err != nil {
			return err
		}
	}

	// An in-memory cluster.
	cs := k8sfake.NewClientset()
	scheme := runtime.NewScheme()
	if err := v1beta1.AddToScheme(scheme); err != nil {
		return err
	}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{kmm.ModuleGVR: "ModuleList"})
	for name, k := range nodes {
		labels := map[string]string{"feature.node.kubernetes.io/acme-nic": "true"}
		if name == "gpu-less" {
			labels = nil
		}
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KernelVersion: k, BootID: name + "-boot"}}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	if _, err := cs.CoreV1().ConfigMaps(mod.Namespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "nic-build"},
		Data: map[string]string{"dockerfile": "# built by kmmkit's assembler from prebuilt modules\nFROM scratch\n"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	modules := kmm.NewModuleClient(dyn)
	if _, err := modules.Create(ctx, mod); err != nil {
		return err
	}

	pl, err := loader.NewPodLoader(cs, workerImage)
	if err != nil {
		return err
	}
	events := record.NewFakeRecorder(100)
	r, err := kmm.NewReconciler(cs, kmm.WithModuleClient(modules), kmm.WithRegistry(rc), kmm.WithBuilder(asm),
		kmm.WithNodeLoader(pl), kmm.WithEventRecorder(events))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "registry %s, %d nodes on %d kernels, Module %s/%s; the image for %s is missing\n\n",
		host, len(nodes), len(kernels), mod.Namespace, mod.Name, kernels[2])
	built := map[string]string{} // kernel → how its image came to be
	for pass := 1; pass <= 20; pass++ {
		m, err := modules.Get(ctx, mod.Namespace, mod.Name)
		if err != nil {
			return err
		}
		res, err := r.Reconcile(ctx, m)
		if err != nil {
			return err
		}
		started, err := kubelet(ctx, cs, mod.Namespace)
		if err != nil {
			return err
		}
		for done := false; !done; {
			select {
			case e := <-events.Events:
				fmt.Fprintf(out, "pass %d: event on the Module: %s\n", pass, e)
				if f := strings.Fields(e); len(f) > 8 && f[1] == "ImageBuilt" {
					built[f[8]] = fmt.Sprintf("built in pass %d", pass)
				}
			default:
				done = true
			}
		}
		if len(started) > 0 {
			fmt.Fprintf(out, "pass %d: the kubelet ran %s\n", pass, strings.Join(started, ", "))
		}
		if len(started) == 0 && (res.RequeueAfter == 0 || res.RequeueAfter >= time.Minute) {
			break
		}
	}
	m, err := modules.Get(ctx, mod.Namespace, mod.Name)
	if err != nil {
		return err
	}
	nl, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintln(out)
	for _, k := range kernels[:2] {
		built[k] = "published before"
	}
	return printModule(out, m, nl.Items, built)
}

// kubelet plays the kubelet of the in-memory cluster: every worker Pod
// runs to success.
func kubelet(ctx context.Context, cs *k8sfake.Clientset, ns string) ([]string, error) {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: loader.LabelWorkerAction})
	if err != nil {
		return nil, err
	}
	var ran []string
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase == corev1.PodSucceeded {
			continue
		}
		p.Status.Phase = corev1.PodSucceeded
		if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			return nil, err
		}
		ran = append(ran, fmt.Sprintf("%s (%s on %s)", p.Name, p.Labels[loader.LabelWorkerAction], p.Spec.NodeName))
	}
	sort.Strings(ran)
	return ran, nil
}

// printModule prints kernels, nodes and conditions.
func printModule(out io.Writer, m *v1beta1.Module, nodeList []corev1.Node, built map[string]string) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KERNEL\tIMAGE\tBUILD\tSTATE\tNODES\tDIGEST")
	for _, k := range m.Status.Kernels {
		d := k.Digest
		if len(d) > 19 {
			d = d[:19] + "…"
		}
		state := string(k.State)
		if k.Reason != "" && string(k.Reason) != state && k.Reason != reason.ImageReady {
			state += " (" + string(k.Reason) + ")"
		}
		if k.Message != "" {
			state += ": " + k.Message
		}
		b := built[k.Kernel]
		switch {
		case k.Build != "":
			b = k.Build
		case b == "":
			b = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", k.Kernel, k.Image, b, state, k.Nodes, d)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(nodeList) > 0 {
		fmt.Fprintln(out)
		sort.Slice(nodeList, func(i, j int) bool { return nodeList[i].Name < nodeList[j].Name })
		fmt.Fprintln(tw, "NODE\tKERNEL\tMODULE\tREADY LABEL")
		for i := range nodeList {
			n := &nodeList[i]
			state := "not selected"
			if obs, ok, _ := loader.ObservedOn(n, m.Namespace, m.Name); ok {
				state = "loaded from " + obs.Config.ContainerImage
			}
			_, ready := n.Labels[loader.ReadyLabel(m.Namespace, m.Name)]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%t\n", n.Name, n.Status.NodeInfo.KernelVersion, state, ready)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(out)
	if s := m.Status.ModuleLoader; s != nil {
		fmt.Fprintf(out, "nodes: %d match the selector, %d desired, %d available\n", s.NodesMatchingSelectorNumber, s.DesiredNumber, s.AvailableNumber)
	}
	for _, c := range m.Status.Conditions {
		fmt.Fprintf(out, "%s=%s (%s): %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	return nil
}
