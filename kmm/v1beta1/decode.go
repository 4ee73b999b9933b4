package v1beta1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// ErrNoModule is returned by DecodeModules when a manifest holds no Module.
var ErrNoModule = errors.New("no Module of kmm.sigs.x-k8s.io/v1beta1 in the manifest")

// KubernetesAPIVersion is the Kubernetes release whose API types
// (k8s.io/api) the Module types embed: volumes, volume mounts, env,
// resources, tolerations, DRA device selectors and configs. Decoding knows
// their fields as of this release.
const KubernetesAPIVersion = "1.34"

// DecodeOption configures DecodeModules and DecodeModule.
//
// +kubebuilder:object:generate=false
type DecodeOption func(*decodeOptions)

type decodeOptions struct {
	// newerFields, when set, receives a warning for each field of an
	// embedded Kubernetes type that KubernetesAPIVersion does not have;
	// such a field is then dropped instead of failing the decode.
	newerFields func(warning string)
}

// AcceptNewerKubernetesFields makes decoding accept a manifest written for
// a newer Kubernetes: a field that an embedded Kubernetes type (a volume,
// an env var, ...) does not have in KubernetesAPIVersion is dropped, and
// warn is called with a message naming its path, as the API server does
// with fieldValidation=Warn. The decoded Module then lacks that field:
// kmmkit cannot carry it to the Pods it creates. An unknown field of
// KMM's own types (a typo, most likely) is still an error.
func AcceptNewerKubernetesFields(warn func(warning string)) DecodeOption {
	return func(o *decodeOptions) { o.newerFields = warn }
}

// DecodeModules reads every Module from a YAML or JSON manifest: a single
// object, a multi-document YAML stream, or a v1 List such as
// `kubectl get modules -o yaml` prints. Objects of other kinds (the
// ConfigMap that holds a Dockerfile, say) are skipped.
//
// Decoding is strict: an unknown field, a duplicated key, or a Module of
// another API version is an error that names the document and the field
// path. A field unknown to an embedded Kubernetes type (one of a
// Kubernetes newer than KubernetesAPIVersion, say) is an error too, which
// says so; AcceptNewerKubernetesFields drops it with a warning instead.
// Defaults that KMM's CRD applies are set with [SetDefaults].
func DecodeModules(data []byte, opts ...DecodeOption) ([]Module, error) {
	var o decodeOptions
	for _, f := range opts {
		f(&o)
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var modules []Module
	for doc := 1; ; doc++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		found, err := decodeDocument(raw, &o)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		modules = append(modules, found...)
	}
	if len(modules) == 0 {
		return nil, ErrNoModule
	}
	return modules, nil
}

// DecodeModule reads a manifest that must hold exactly one Module.
func DecodeModule(data []byte, opts ...DecodeOption) (*Module, error) {
	modules, err := DecodeModules(data, opts...)
	if err != nil {
		return nil, err
	}
	if len(modules) != 1 {
		return nil, fmt.Errorf("manifest holds %d Modules, want exactly one", len(modules))
	}
	return &modules[0], nil
}

// typeHeader is the part of any object needed to tell what it is.
type typeHeader struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

// decodeDocument decodes one YAML or JSON document into the Modules it
// holds: none, one, or the Module items of a List.
func decodeDocument(raw []byte, o *decodeOptions) ([]Module, error) {
	if len(bytes.TrimSpace(stripComments(raw))) == 0 {
		return nil, nil
	}
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid YAML or JSON: %w", err)
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil, nil
	}
	var head typeHeader
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &head); err != nil {
		return nil, fmt.Errorf("not a Kubernetes object: %w", err)
	}
	switch {
	case head.Kind == "List" && head.APIVersion == "v1":
		return decodeList(js, o)
	case head.Kind == "ModuleList" && groupOf(head.APIVersion) == GroupName:
		if err := checkAPIVersion(head); err != nil {
			return nil, err
		}
		return decodeList(js, o)
	case head.Kind == Kind && groupOf(head.APIVersion) == GroupName:
		if err := checkAPIVersion(head); err != nil {
			return nil, err
		}
		m, err := decodeModuleJSON(js, o)
		if err != nil {
			return nil, err
		}
		return []Module{*m}, nil
	default:
		return nil, nil
	}
}

// decodeList decodes the Module items of a v1 List or a ModuleList.
func decodeList(js []byte, o *decodeOptions) ([]Module, error) {
	var list struct {
		Items []jsonRaw `json:"items"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &list); err != nil {
		return nil, fmt.Errorf("invalid list: %w", err)
	}
	var modules []Module
	for i, item := range list.Items {
		found, err := decodeDocument(item, o)
		if err != nil {
			return nil, fmt.Errorf("items[%d]: %w", i, err)
		}
		modules = append(modules, found...)
	}
	return modules, nil
}

// jsonRaw keeps a list item undecoded.
type jsonRaw []byte

// UnmarshalJSON stores a copy of the item.
func (r *jsonRaw) UnmarshalJSON(b []byte) error {
	*r = append((*r)[:0], b...)
	return nil
}

// decodeModuleJSON strictly decodes one Module object.
func decodeModuleJSON(js []byte, o *decodeOptions) (*Module, error) {
	var m Module
	unknown, err := kjson.UnmarshalStrict(js, &m, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("Module: %w", err)
	}
	duplicated, err := kjson.UnmarshalStrict(js, &Module{}, kjson.DisallowDuplicateFields)
	if err != nil {
		return nil, fmt.Errorf("Module: %w", err)
	}
	var msgs []string
	for _, e := range unknown {
		var fe kjson.FieldError
		if !errors.As(e, &fe) {
			msgs = append(msgs, e.Error())
			continue
		}
		owner := fieldOwner(reflect.TypeOf(m), fe.FieldPath())
		if owner == nil || !strings.HasPrefix(owner.PkgPath(), "k8s.io/api/") {
			msgs = append(msgs, e.Error())
			continue
		}
		why := fmt.Sprintf("%s: Kubernetes %s's %s has no such field (a field of a newer Kubernetes?)", e, KubernetesAPIVersion, owner.Name())
		if o.newerFields != nil {
			o.newerFields(why + "; dropped")
			continue
		}
		msgs = append(msgs, why+"; kmmkit cannot carry it to the Pods it creates (see AcceptNewerKubernetesFields)")
	}
	for _, e := range duplicated {
		msgs = append(msgs, e.Error())
	}
	if len(msgs) > 0 {
		name := m.Name
		if name == "" {
			name = "(unnamed)"
		}
		return nil, fmt.Errorf("Module %s: %s", name, strings.Join(msgs, "; "))
	}
	SetDefaults(&m)
	return &m, nil
}

// fieldOwner returns the struct type that holds the last field of a JSON
// field path of t ("spec.devicePlugin.volumes[0].projected.sources[0].x"
// is held by VolumeProjection), or nil when the path does not lead
// through t's fields.
func fieldOwner(t reflect.Type, path string) reflect.Type {
	segs := strings.Split(path, ".")
	for _, seg := range segs[:len(segs)-1] {
		name, _, _ := strings.Cut(seg, "[")
		f, ok := jsonField(deref(t), name)
		if !ok {
			return nil
		}
		t = f.Type
		// One level of slice, array or map per index in the segment.
		for range strings.Count(seg, "[") {
			t = deref(t)
			switch t.Kind() {
			case reflect.Slice, reflect.Array, reflect.Map:
				t = t.Elem()
			default:
				return nil
			}
		}
	}
	t = deref(t)
	if t.Kind() != reflect.Struct {
		return nil
	}
	return t
}

// deref strips pointers.
func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// jsonField finds the field of struct t that JSON names name, looking
// into inlined embedded structs.
func jsonField(t reflect.Type, name string) (reflect.StructField, bool) {
	if t.Kind() != reflect.Struct {
		return reflect.StructField{}, false
	}
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case tag == "-":
		case tag == name:
			return f, true
		case tag == "" && f.Anonymous:
			if inner, ok := jsonField(deref(f.Type), name); ok {
				return inner, true
			}
		case tag == "" && f.Name == name:
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// checkAPIVersion rejects a Module of the KMM group in another version.
func checkAPIVersion(h typeHeader) error {
	if h.APIVersion != SchemeGroupVersion.String() {
		return fmt.Errorf("%s %q has apiVersion %q, want %q", h.Kind, h.Metadata.Name, h.APIVersion, SchemeGroupVersion.String())
	}
	return nil
}

// groupOf returns the group part of an apiVersion.
func groupOf(apiVersion string) string {
	if i := strings.LastIndexByte(apiVersion, '/'); i >= 0 {
		return apiVersion[:i]
	}
	return ""
}

// stripComments removes YAML comment lines, so a document of only comments
// counts as empty.
func stripComments(raw []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(raw, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' {
			continue
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

// DefaultDirName is the directory KMM's CRD gives modprobe.dirName when it
// is not set.
const DefaultDirName = "/opt"

// SetDefaults applies the defaults that KMM's CRD schema applies on the API
// server, so a decoded Module matches what the cluster would store.
func SetDefaults(m *Module) {
	if m.Spec.ModuleLoader != nil && m.Spec.ModuleLoader.Container.Modprobe.DirName == "" {
		m.Spec.ModuleLoader.Container.Modprobe.DirName = DefaultDirName
	}
}
