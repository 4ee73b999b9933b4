package kernelmap

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"

	"github.com/go-logr/logr"
	"github.com/hashicorp/go-multierror"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// ErrNoMapping says that no kernel mapping of a Module matches a kernel.
// It is an outcome, not a failure: the node is simply not targeted.
var ErrNoMapping = errors.New("no kernel mapping matches the kernel")

// ErrNoModuleLoader says that a Module has no moduleLoader, so there is
// nothing to map.
var ErrNoModuleLoader = errors.New("the Module has no moduleLoader")

// FieldError is a resolution failure caused by one field of a Module.
type FieldError struct {
	// Field is the path of the field, such as
	// "spec.moduleLoader.container.kernelMappings[1].regexp".
	Field string
	// Value is the field's value.
	Value string
	// Err is what is wrong with it.
	Err error
}

// Error implements error.
func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: %v", e.Field, e.Err)
}

// Unwrap returns the underlying error.
func (e *FieldError) Unwrap() error { return e.Err }

// DefaultRegexpCacheSize is how many compiled mapping regexps a Mapper keeps
// unless WithRegexpCacheSize says otherwise.
const DefaultRegexpCacheSize = 4096

// Mapper finds and resolves kernel mappings. It caches compiled regexps, so
// one Mapper should be shared by every reconcile; it is safe for concurrent
// use. The zero value is not usable: call New.
type Mapper struct {
	maxCached int
	log       logr.Logger

	mu      sync.Mutex
	regexps map[string]compiled
}

// compiled is a cached regexp compilation, successful or not.
type compiled struct {
	re  *regexp.Regexp
	err error
}

// Option configures a Mapper (see New). Options only record a value.
type Option func(*options)

type options struct {
	maxCached int
	log       logr.Logger
}

// WithRegexpCacheSize sets how many compiled regexps are kept (default
// DefaultRegexpCacheSize). When the cache is full it is emptied and filled
// again; New refuses n < 1.
func WithRegexpCacheSize(n int) Option { return func(o *options) { o.maxCached = n } }

// WithLogger makes the Mapper log, at verbosity 2, which mapping each
// kernel matched. Its methods take no context, so without it the Mapper
// logs nothing.
func WithLogger(log logr.Logger) Option { return func(o *options) { o.log = log } }

// New returns a Mapper. It fails on an option it cannot use, naming it.
func New(opts ...Option) (*Mapper, error) {
	o := options{maxCached: DefaultRegexpCacheSize, log: logr.Discard()}
	for _, f := range opts {
		f(&o)
	}
	if o.maxCached < 1 {
		return nil, fmt.Errorf("kernelmap: WithRegexpCacheSize(%d): keep at least one regexp", o.maxCached)
	}
	if o.log.GetSink() == nil {
		o.log = logr.Discard()
	}
	return &Mapper{maxCached: o.maxCached, log: o.log, regexps: make(map[string]compiled, min(o.maxCached, 64))}, nil
}

// Find returns the index of the mapping that selects nodeKernel, exactly as
// KMM chooses it: one trailing "+" is trimmed from the kernel, mappings are
// tried in list order and the first match wins, a literal must equal the
// kernel, and a regexp matches anywhere in it (it is not anchored). It
// returns ErrNoMapping when none matches, and a *FieldError when a regexp
// does not compile.
func (m *Mapper) Find(mappings []v1beta1.KernelMapping, nodeKernel string) (int, error) {
	kernel := TrimKernel(nodeKernel)
	for i := range mappings {
		km := &mappings[i]
		if km.Literal != "" && km.Literal == kernel {
			return i, nil
		}
		if km.Regexp == "" {
			continue
		}
		re, err := m.compile(km.Regexp)
		if err != nil {
			return -1, &FieldError{
				Field: fmt.Sprintf("spec.moduleLoader.container.kernelMappings[%d].regexp", i),
				Value: km.Regexp,
				Err:   err,
			}
		}
		if re.MatchString(kernel) {
			return i, nil
		}
	}
	return -1, ErrNoMapping
}

// compile returns the compiled form of pattern from the cache, compiling it
// on first use.
func (m *Mapper) compile(pattern string) (*regexp.Regexp, error) {
	m.mu.Lock()
	c, ok := m.regexps[pattern]
	m.mu.Unlock()
	if ok {
		return c.re, c.err
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		err = fmt.Errorf("invalid regexp: %w", err)
	}
	m.mu.Lock()
	if len(m.regexps) >= m.maxCached {
		clear(m.regexps)
	}
	m.regexps[pattern] = compiled{re: re, err: err}
	m.mu.Unlock()
	return re, err
}

// Resolve finds the mapping of module for nodeKernel and resolves it into
// the record every later step uses. It returns ErrNoMapping when no mapping
// matches, ErrNoModuleLoader when the module loads nothing, and a
// *FieldError naming the field when a template or a version cannot be
// resolved.
func (m *Mapper) Resolve(module *v1beta1.Module, nodeKernel string) (*Record, error) {
	return m.ResolveSpec(module.Name, module.Namespace, &module.Spec, nodeKernel)
}

// ResolveSpec is Resolve for a ModuleSpec embedded in another resource;
// name and namespace are those of that resource and fill MOD_NAME and
// MOD_NAMESPACE.
func (m *Mapper) ResolveSpec(name, namespace string, spec *v1beta1.ModuleSpec, nodeKernel string) (*Record, error) {
	if spec.ModuleLoader == nil {
		return nil, ErrNoModuleLoader
	}
	container := &spec.ModuleLoader.Container
	idx, err := m.Find(container.KernelMappings, nodeKernel)
	if errors.Is(err, ErrNoMapping) {
		m.log.V(2).Info("no kernel mapping matches", "module", name, "namespace", namespace, "kernel", nodeKernel)
	}
	if err != nil {
		return nil, err
	}
	m.log.V(2).Info("kernel mapping matched", "module", name, "namespace", namespace, "kernel", nodeKernel, "mapping", idx)
	kernel, err := ParseKernel(nodeKernel)
	if err != nil {
		return nil, &FieldError{Field: "node.status.nodeInfo.kernelVersion", Value: nodeKernel, Err: err}
	}
	return resolve(name, namespace, spec, idx, kernel)
}

// Resolution is the outcome of mapping one Module for many kernels.
type Resolution struct {
	// Records holds the record of every kernel that has a mapping, by the
	// kernel as it was given.
	Records map[string]*Record
	// Unmapped lists, sorted, the kernels that no mapping matches.
	Unmapped []string
	// Failed holds the error of every kernel that could not be resolved.
	Failed map[string]error
}

// ResolveAll resolves module for every distinct kernel of nodeKernels, the
// way a reconcile does for the kernels of a cluster's nodes. One kernel's
// failure does not stop the others: the Resolution holds every success and
// every failure, and the returned error, when not nil, is a
// *multierror.Error with one entry per failed kernel, in sorted order.
// ErrNoModuleLoader is returned alone, since it concerns every kernel.
func (m *Mapper) ResolveAll(module *v1beta1.Module, nodeKernels []string) (*Resolution, error) {
	if module.Spec.ModuleLoader == nil {
		return nil, ErrNoModuleLoader
	}
	res := &Resolution{Records: map[string]*Record{}, Failed: map[string]error{}}
	seen := make(map[string]bool, len(nodeKernels))
	for _, k := range nodeKernels {
		if seen[k] {
			continue
		}
		seen[k] = true
		rec, err := m.Resolve(module, k)
		switch {
		case errors.Is(err, ErrNoMapping):
			res.Unmapped = append(res.Unmapped, k)
		case err != nil:
			res.Failed[k] = err
		default:
			res.Records[k] = rec
		}
	}
	sort.Strings(res.Unmapped)
	if len(res.Failed) == 0 {
		return res, nil
	}
	failed := make([]string, 0, len(res.Failed))
	for k := range res.Failed {
		failed = append(failed, k)
	}
	sort.Strings(failed)
	var merr *multierror.Error
	for _, k := range failed {
		merr = multierror.Append(merr, fmt.Errorf("kernel %q: %w", k, res.Failed[k]))
	}
	return res, merr
}
