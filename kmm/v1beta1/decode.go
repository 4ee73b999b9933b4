package v1beta1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// ErrNoModule is returned by DecodeModules when a manifest holds no Module.
var ErrNoModule = errors.New("no Module of kmm.sigs.x-k8s.io/v1beta1 in the manifest")

// DecodeModules reads every Module from a YAML or JSON manifest: a single
// object, a multi-document YAML stream, or a v1 List such as
// `kubectl get modules -o yaml` prints. Objects of other kinds (the
// ConfigMap that holds a Dockerfile, say) are skipped.
//
// Decoding is strict: an unknown field, a duplicated key, or a Module of
// another API version is an error that names the document and the field
// path. Defaults that KMM's CRD applies are set with [SetDefaults].
func DecodeModules(data []byte) ([]Module, error) {
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
		found, err := decodeDocument(raw)
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
func DecodeModule(data []byte) (*Module, error) {
	modules, err := DecodeModules(data)
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
func decodeDocument(raw []byte) ([]Module, error) {
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
		return decodeList(js)
	case head.Kind == "ModuleList" && groupOf(head.APIVersion) == GroupName:
		if err := checkAPIVersion(head); err != nil {
			return nil, err
		}
		return decodeList(js)
	case head.Kind == Kind && groupOf(head.APIVersion) == GroupName:
		if err := checkAPIVersion(head); err != nil {
			return nil, err
		}
		m, err := decodeModuleJSON(js)
		if err != nil {
			return nil, err
		}
		return []Module{*m}, nil
	default:
		return nil, nil
	}
}

// decodeList decodes the Module items of a v1 List or a ModuleList.
func decodeList(js []byte) ([]Module, error) {
	var list struct {
		Items []jsonRaw `json:"items"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &list); err != nil {
		return nil, fmt.Errorf("invalid list: %w", err)
	}
	var modules []Module
	for i, item := range list.Items {
		found, err := decodeDocument(item)
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
func decodeModuleJSON(js []byte) (*Module, error) {
	var m Module
	strictErrs, err := kjson.UnmarshalStrict(js, &m)
	if err != nil {
		return nil, fmt.Errorf("Module: %w", err)
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = e.Error()
		}
		name := m.Name
		if name == "" {
			name = "(unnamed)"
		}
		return nil, fmt.Errorf("Module %s: %s", name, strings.Join(msgs, "; "))
	}
	SetDefaults(&m)
	return &m, nil
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
