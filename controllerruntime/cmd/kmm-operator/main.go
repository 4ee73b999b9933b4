// Command kmm-operator is a drop-in operator for KMM's Module
// (kmm.sigs.x-k8s.io/v1beta1): it reconciles every Module with kmmkit —
// KMM's labels, worker Pods and builds, kmmkit's conditions — and serves
// the Module admission webhook.
//
//	kmm-operator --worker-image quay.io/acme/kmm-worker:v1 [--kubeconfig F]
//
// Its manifests are in controllerruntime/config (kubectl apply -k
// controllerruntime/config): the Module CRD, a Namespace whose Pod
// Security level is privileged (worker Pods load kernel modules), the
// ServiceAccount and the generated roles, the Deployment, and the
// webhook's Service and ValidatingWebhookConfiguration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	buildclient "github.com/openshift/client-go/build/clientset/versioned"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/builder/kaniko"
	"github.com/kmmkit/kmmkit/builder/openshift"
	"github.com/kmmkit/kmmkit/controllerruntime/admission"
	"github.com/kmmkit/kmmkit/controllerruntime/cached"
	"github.com/kmmkit/kmmkit/controllerruntime/operator"
	"github.com/kmmkit/kmmkit/identity"
	"github.com/kmmkit/kmmkit/kmm"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/loader"
	"github.com/kmmkit/kmmkit/registry"
)

// flags are the operator's settings.
type flags struct {
	workerImage, firmwareHostPath              string
	metricsAddr, probeAddr                     string
	leaderElect                                bool
	leaderElectionNamespace                    string
	webhookHost, webhookCertDir                string
	webhookPort                                int
	watchNamespaces                            string
	builder, kanikoImage, kanikoServiceAccount string
	registryCAFile                             string
	cachedReads                                bool
	maxConcurrentReconciles                    int
	zap                                        zap.Options
}

func parse(fs *flag.FlagSet, args []string) (*flags, error) {
	f := &flags{}
	fs.StringVar(&f.workerImage, "worker-image", os.Getenv("KMM_WORKER_IMAGE"),
		"image of the worker Pods, holding kmmkit's static kmm binary at /kmm (default $KMM_WORKER_IMAGE)")
	fs.StringVar(&f.firmwareHostPath, "firmware-host-path", "", "host directory firmware is copied to (default /lib/firmware; /var/lib/firmware where /lib is read-only)")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "address of the metrics endpoint (0 disables it)")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz (0 disables them)")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "elect a leader, so that only one replica reconciles")
	fs.StringVar(&f.leaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader election Lease (default: the operator's own, in a cluster)")
	fs.StringVar(&f.webhookHost, "webhook-host", "", "address the admission webhook listens on (default all)")
	fs.IntVar(&f.webhookPort, "webhook-port", webhook.DefaultPort, "port of the admission webhook (0 disables it)")
	fs.StringVar(&f.webhookCertDir, "webhook-cert-dir", "", "directory holding the webhook's tls.crt and tls.key (default controller-runtime's, <tmp>/k8s-webhook-server/serving-certs)")
	fs.StringVar(&f.watchNamespaces, "watch-namespaces", "", "comma-separated namespaces whose Modules to reconcile (default all)")
	fs.StringVar(&f.builder, "builder", "kaniko", "how missing images with a build are built: kaniko (a Kaniko Pod, as KMM), openshift (a build.openshift.io Build) or none")
	fs.StringVar(&f.kanikoImage, "kaniko-image", kaniko.DefaultImage, "Kaniko executor image of build Pods")
	fs.StringVar(&f.kanikoServiceAccount, "kaniko-service-account", "", "service account of Kaniko build Pods (default the namespace's default)")
	fs.StringVar(&f.registryCAFile, "registry-ca-file", "", "PEM file of extra CA certificates for registries")
	fs.BoolVar(&f.cachedReads, "cached-reads", false, "read Secrets, ConfigMaps and Namespaces from the cache (needs list and watch on them)")
	fs.IntVar(&f.maxConcurrentReconciles, "max-concurrent-reconciles", 4, "how many Modules are reconciled at once")
	f.zap.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if f.workerImage == "" {
		return nil, errors.New("--worker-image (or $KMM_WORKER_IMAGE) is required: the image that holds kmmkit's kmm binary at /kmm")
	}
	switch f.builder {
	case "kaniko", "openshift", "none":
	default:
		return nil, fmt.Errorf("--builder %q: want kaniko, openshift or none", f.builder)
	}
	return f, nil
}

func main() {
	f, err := parse(flag.CommandLine, os.Args[1:])
	if err == nil {
		ctrl.SetLogger(zap.New(zap.UseFlagOptions(&f.zap)))
		var cfg *rest.Config
		if cfg, err = ctrl.GetConfig(); err == nil {
			err = run(ctrl.SetupSignalHandler(), cfg, f)
		}
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "kmm-operator:", err)
		os.Exit(1)
	}
}

// run builds the manager and runs it until ctx ends.
func run(ctx context.Context, cfg *rest.Config, f *flags) error {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := v1beta1.AddToScheme(scheme); err != nil {
		return err
	}
	opts := ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress:  f.probeAddr,
		LeaderElection:          f.leaderElect,
		LeaderElectionID:        "kmm-operator.kmm.sigs.x-k8s.io",
		LeaderElectionNamespace: f.leaderElectionNamespace,
		Cache:                   cache.Options{ByObject: cached.ByObject(identity.Domain{})},
	}
	if f.watchNamespaces != "" {
		opts.Cache.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range strings.Split(f.watchNamespaces, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				opts.Cache.DefaultNamespaces[ns] = cache.Config{}
			}
		}
	}
	if f.webhookPort != 0 {
		opts.WebhookServer = webhook.NewServer(webhook.Options{Host: f.webhookHost, Port: f.webhookPort, CertDir: f.webhookCertDir})
	}
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		return err
	}
	log := mgr.GetLogger()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var regOpts []registry.Option
	if f.registryCAFile != "" {
		pem, err := os.ReadFile(f.registryCAFile)
		if err != nil {
			return fmt.Errorf("--registry-ca-file: %w", err)
		}
		regOpts = append(regOpts, registry.WithCABundle(pem))
	}
	reg, err := registry.NewClient(append(regOpts, registry.WithLogger(log.WithName("registry")))...)
	if err != nil {
		return err
	}
	var b builder.Builder
	switch f.builder {
	case "kaniko":
		// The registry client (and its CA) also lints and publishes what
		// the build Pods pushed.
		ko := []kaniko.Option{kaniko.WithImage(f.kanikoImage), kaniko.WithLogger(log.WithName("kaniko")), kaniko.WithRegistry(reg)}
		if f.kanikoServiceAccount != "" {
			ko = append(ko, kaniko.WithServiceAccount(f.kanikoServiceAccount))
		}
		if b, err = kaniko.New(cs, ko...); err != nil {
			return fmt.Errorf("--kaniko-image: %w", err)
		}
	case "openshift":
		bc, err := buildclient.NewForConfig(cfg)
		if err != nil {
			return err
		}
		if b, err = openshift.New(bc, openshift.WithLogger(log.WithName("openshift")), openshift.WithSecrets(cs)); err != nil {
			return err
		}
	}
	m, err := kmm.NewMetrics(metrics.Registry)
	if err != nil {
		return err
	}
	o := operator.Options{WorkerImage: f.workerImage, Clientset: cs, Registry: reg, Builder: b, Metrics: m,
		CachedReads: f.cachedReads, MaxConcurrentReconciles: f.maxConcurrentReconciles}
	if f.firmwareHostPath != "" {
		o.PodLoaderOptions = append(o.PodLoaderOptions, loader.WithFirmwareHostPath(f.firmwareHostPath))
	}
	if err := operator.SetupModule(mgr, o); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	ready := healthz.Ping
	if f.webhookPort != 0 {
		if err := admission.SetupModuleWebhook(mgr); err != nil {
			return err
		}
		ready = mgr.GetWebhookServer().StartedChecker()
	}
	if err := mgr.AddReadyzCheck("ready", ready); err != nil {
		return err
	}
	log.Info("starting", "workerImage", f.workerImage, "builder", f.builder, "watchNamespaces", f.watchNamespaces, "webhookPort", f.webhookPort)
	return mgr.Start(ctx)
}
