package kmm

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kmmkit/kmmkit/builder"
	"github.com/kmmkit/kmmkit/registry"
	"github.com/kmmkit/kmmkit/upgrade"
)

// Metrics are the Reconciler's Prometheus metrics: KMM's kmm_* gauges,
// plus reconcile durations, builds and image checks.
type Metrics struct {
	modules, builds, signs, devicePlugins, modprobeArgs, modprobeRawArgs prometheus.Gauge
	nodes                                                                *prometheus.GaugeVec
	duration                                                             *prometheus.HistogramVec
	buildPhases, checks                                                  *prometheus.CounterVec
	upgradeNodes                                                         *prometheus.GaugeVec
	upgradeSteps                                                         *prometheus.CounterVec

	mu    sync.Mutex
	known map[string]moduleFlags
}

type moduleFlags struct{ build, sign, devicePlugin, args, rawArgs bool }

// NewMetrics creates the metrics and registers them on reg (the caller's
// registry, never the global one).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	m := &Metrics{
		modules:         g("kmm_module_num", "Number of Modules."),
		builds:          g("kmm_in_cluster_build_num", "Number of Modules with a build."),
		signs:           g("kmm_in_cluster_sign_num", "Number of Modules with signing."),
		devicePlugins:   g("kmm_device_plugin_num", "Number of Modules with a device plugin."),
		modprobeArgs:    g("kmm_modprobe_args", "Number of Modules that set modprobe args."),
		modprobeRawArgs: g("kmm_modprobe_raw_args", "Number of Modules that set modprobe raw args."),
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kmmkit_module_nodes",
			Help: "Nodes of a Module (or an embedder's owner: the owner label names its kind and domain) by state: desired, available."},
			[]string{"owner", "namespace", "module", "state"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kmmkit_reconcile_duration_seconds",
			Help: "Duration of Reconcile passes.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"result"}),
		buildPhases: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kmmkit_build_syncs_total",
			Help: "Build syncs by reported phase."}, []string{"phase"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kmmkit_image_checks_total",
			Help: "Image existence checks by result: exists, missing, error."}, []string{"result"}),
		upgradeNodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kmmkit_upgrade_nodes",
			Help: "Targeted nodes of an owner by rolling-upgrade state (WithRollingUpgrade; \"none\": never upgraded)."},
			[]string{"owner", "namespace", "module", "state"}),
		upgradeSteps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kmmkit_upgrade_steps_total",
			Help: "Rolling-upgrade steps taken, by the state a node entered."}, []string{"owner", "namespace", "module", "state"}),
		known: map[string]moduleFlags{},
	}
	for _, c := range []prometheus.Collector{m.modules, m.builds, m.signs, m.devicePlugins, m.modprobeArgs, m.modprobeRawArgs,
		m.nodes, m.duration, m.buildPhases, m.checks, m.upgradeNodes, m.upgradeSteps} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) imageCheck(res registry.Result, err error) {
	if m == nil {
		return
	}
	switch {
	case err != nil:
		m.checks.WithLabelValues("error").Inc()
	case res.Exists:
		m.checks.WithLabelValues("exists").Inc()
	default:
		m.checks.WithLabelValues("missing").Inc()
	}
}

func (m *Metrics) build(st builder.Status) {
	if m == nil || st.Phase == "" {
		return
	}
	m.buildPhases.WithLabelValues(string(st.Phase)).Inc()
}

// reconciled records a pass and the Module's gauges.
// owner is the identity's kind and domain (identity.Domain.String), so
// same-named owners of two embedders are two series.
func (m *Metrics) reconciled(owner string, obj Object, res Result, err error, d time.Duration) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.duration.WithLabelValues(result).Observe(d.Seconds())
	key := owner + "\x00" + obj.Namespace + "/" + obj.Name
	m.mu.Lock()
	defer m.mu.Unlock()
	if res.Done {
		delete(m.known, key)
		m.nodes.DeleteLabelValues(owner, obj.Namespace, obj.Name, "desired")
		m.nodes.DeleteLabelValues(owner, obj.Namespace, obj.Name, "available")
		m.upgradeNodes.DeletePartialMatch(prometheus.Labels{"owner": owner, "namespace": obj.Namespace, "module": obj.Name})
	} else {
		f := moduleFlags{devicePlugin: obj.Spec.DevicePlugin != nil}
		if ml := obj.Spec.ModuleLoader; ml != nil {
			c := ml.Container
			f.build, f.sign = c.Build != nil, c.Sign != nil
			f.args, f.rawArgs = c.Modprobe.Args != nil, c.Modprobe.RawArgs != nil
			for _, km := range c.KernelMappings {
				f.build = f.build || km.Build != nil
				f.sign = f.sign || km.Sign != nil
			}
		}
		m.known[key] = f
		if s := res.Status.ModuleLoader; s != nil {
			m.nodes.WithLabelValues(owner, obj.Namespace, obj.Name, "desired").Set(float64(s.DesiredNumber))
			m.nodes.WithLabelValues(owner, obj.Namespace, obj.Name, "available").Set(float64(s.AvailableNumber))
		}
	}
	var n, b, s, dp, a, ra float64
	for _, f := range m.known {
		n++
		b += bool01(f.build)
		s += bool01(f.sign)
		dp += bool01(f.devicePlugin)
		a += bool01(f.args)
		ra += bool01(f.rawArgs)
	}
	m.modules.Set(n)
	m.builds.Set(b)
	m.signs.Set(s)
	m.devicePlugins.Set(dp)
	m.modprobeArgs.Set(a)
	m.modprobeRawArgs.Set(ra)
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// upgradeStates sets the rolling-upgrade gauge of an owner.
func (m *Metrics) upgradeStates(owner string, obj Object, nodes []upgrade.Node) {
	if m == nil {
		return
	}
	count := map[upgrade.State]int{}
	for _, n := range nodes {
		count[n.State]++
	}
	for _, s := range append([]upgrade.State{upgrade.None}, upgrade.States...) {
		name := string(s)
		if s == upgrade.None {
			name = "none"
		}
		m.upgradeNodes.WithLabelValues(owner, obj.Namespace, obj.Name, name).Set(float64(count[s]))
	}
}

// upgradeStep counts a node entering state s.
func (m *Metrics) upgradeStep(owner string, obj Object, s upgrade.State) {
	if m == nil {
		return
	}
	m.upgradeSteps.WithLabelValues(owner, obj.Namespace, obj.Name, string(s)).Inc()
}
