package v1beta1

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	yaml3 "go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// ManifestObject is one object of a YAML or JSON manifest, as
// ReadManifest finds it: a document of the stream, or an item of a List
// in one. Its methods decode it strictly and report every problem with its
// field path and line; LineOf finds where a field is in the stream.
//
// +kubebuilder:object:generate=false
type ManifestObject struct {
	// Document is the number of the object's document in the stream, from 1.
	Document int
	// Item is the object's index in the items of a v1 List or a ModuleList,
	// or -1 when the document is the object.
	Item int
	// Line is the line of the stream the object starts on, from 1.
	Line int
	// APIVersion, Kind, Namespace and Name are read from the object (empty
	// when it has none, or they are not strings).
	APIVersion, Kind, Namespace, Name string
	// Err is set when the document is not YAML or JSON, or not an object;
	// nothing else is known of it.
	Err error

	value any      // the object, as JSON decodes it (json.Number numbers)
	base  []string // the object's path in its document: none, or items and i
	doc   *docInfo // the lines and duplicate keys of its document
}

// docInfo is what the YAML of one document says about its fields.
type docInfo struct {
	lines map[string]int // canonical path from the document's root → line in the stream
	dups  []duplicateKey
}

// duplicateKey is a mapping key given twice in one document.
type duplicateKey struct {
	segs        []string // its path from the document's root
	line, first int
}

// canonical joins the segments of a path (names, keys and indexes alike),
// so that spec.selector.a and spec.selector[a] are the same field.
func canonical(segs []string) string { return strings.Join(segs, "\x00") }

// ReadManifest splits a YAML or JSON manifest — one object, a
// multi-document YAML stream, or a v1 List or ModuleList such as
// `kubectl get -o yaml` prints — into its objects, of any kind. A
// document that cannot be read is returned with Err set, and reading goes
// on with the next one, so every document of the stream is accounted
// for; empty documents are skipped. Duplicate keys are reported by the
// decoding methods; the last value given is the one decoded, as the API
// server's YAML reading does.
func ReadManifest(data []byte) []ManifestObject {
	var out []ManifestObject
	for n, d := range splitDocuments(data) {
		head := ManifestObject{Document: n + 1, Item: -1, Line: d.line}
		if len(bytes.TrimSpace(stripComments(d.text))) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSON(d.text)
		if err != nil {
			head.Err = fmt.Errorf("invalid YAML or JSON: %s", shiftLines(err.Error(), d.line-1))
			out = append(out, head)
			continue
		}
		var v any
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			head.Err = fmt.Errorf("invalid YAML or JSON: %w", err)
			out = append(out, head)
			continue
		}
		if v == nil {
			continue
		}
		obj, ok := v.(map[string]any)
		if !ok {
			head.Err = fmt.Errorf("not a Kubernetes object: the document is %s", describeJSON(v))
			out = append(out, head)
			continue
		}
		info := readLines(d.text, d.line)
		apiVersion, _ := obj["apiVersion"].(string)
		kind, _ := obj["kind"].(string)
		items, isArray := obj["items"].([]any)
		if isArray && ((kind == "List" && apiVersion == "v1") || (kind == "ModuleList" && groupOf(apiVersion) == GroupName)) {
			for i, item := range items {
				o := head
				o.Item, o.base, o.doc = i, []string{"items", strconv.Itoa(i)}, info
				if l := info.lines[canonical(o.base)]; l > 0 {
					o.Line = l
				}
				if m, ok := item.(map[string]any); ok {
					o.setObject(m)
				} else {
					o.Err = fmt.Errorf("items[%d] is not a Kubernetes object: it is %s", i, describeJSON(item))
				}
				out = append(out, o)
			}
			continue
		}
		head.doc = info
		head.setObject(obj)
		out = append(out, head)
	}
	return out
}

// setObject stores the object and reads its type and name.
func (o *ManifestObject) setObject(m map[string]any) {
	o.value = m
	o.APIVersion, _ = m["apiVersion"].(string)
	o.Kind, _ = m["kind"].(string)
	if meta, ok := m["metadata"].(map[string]any); ok {
		o.Name, _ = meta["name"].(string)
		o.Namespace, _ = meta["namespace"].(string)
	}
}

// IsModule says whether the object is a Module of group kmm.sigs.x-k8s.io
// (in any version; Module reports another version as a problem).
func (o *ManifestObject) IsModule() bool {
	return o.Err == nil && o.Kind == Kind && groupOf(o.APIVersion) == GroupName
}

// Module decodes the object strictly as a Module, applies the CRD's
// defaults (SetDefaults), and returns it with every problem decoding met:
// each unknown field (with the nearest known field name as a suggestion),
// each duplicate key (with its lines) and each value of the wrong type,
// with its field path (LineOf gives its line). The Module is decoded as far as it can be; it is nil
// only when the object is not a Module of this version or has Err.
func (o *ManifestObject) Module() (*Module, field.ErrorList) {
	switch {
	case o.Err != nil:
		return nil, field.ErrorList{field.Invalid(field.NewPath("document"), field.OmitValueType{}, o.Err.Error())}
	case !o.IsModule():
		return nil, field.ErrorList{field.Invalid(field.NewPath("kind"), o.Kind, fmt.Sprintf("%s %q is not a Module of %s", o.Kind, o.Name, GroupName))}
	case o.APIVersion != SchemeGroupVersion.String():
		return nil, field.ErrorList{field.NotSupported(field.NewPath("apiVersion"), o.APIVersion, []string{SchemeGroupVersion.String()})}
	}
	var m Module
	errs := o.decode(o.value, nil, &m)
	SetDefaults(&m)
	return &m, errs
}

// ModuleSpecAt decodes strictly, as a ModuleSpec, the object at path in
// this object ("spec.module", "spec.drivers[0]", "spec.modules[gpu]"),
// and applies the CRD's defaults. Errors carry the full path
// (spec.module.moduleLoader…). at is the path as a field.Path, for
// ValidateSpec, and nil when the object has nothing at path.
func (o *ManifestObject) ModuleSpecAt(path string) (spec *ModuleSpec, at *field.Path, errs field.ErrorList) {
	spec = &ModuleSpec{}
	if at, errs = o.specAt(path, spec, &spec.ModuleLoader); at == nil {
		return nil, nil, nil
	}
	return spec, at, errs
}

// EmbeddedSpecAt is ModuleSpecAt for an EmbeddedModuleSpec: devicePlugin
// and dra are unknown fields there.
func (o *ManifestObject) EmbeddedSpecAt(path string) (spec *EmbeddedModuleSpec, at *field.Path, errs field.ErrorList) {
	spec = &EmbeddedModuleSpec{}
	if at, errs = o.specAt(path, spec, &spec.ModuleLoader); at == nil {
		return nil, nil, nil
	}
	return spec, at, errs
}

// specAt decodes the object at path into target, whose module loader is
// *loader, and applies the CRD's defaults to it.
func (o *ManifestObject) specAt(path string, target any, loader **ModuleLoaderSpec) (*field.Path, field.ErrorList) {
	v, at := o.lookup(path)
	if at == nil {
		return nil, nil
	}
	errs := o.decode(v, at, target)
	SetDefaults(&Module{Spec: ModuleSpec{ModuleLoader: *loader}})
	return at, errs
}

// LineOf returns the line of the stream that the field at path (as a
// field.Error names it: "spec.moduleLoader.container.kernelMappings[0]")
// is on, or that of its nearest ancestor present in the manifest; the
// object's Line for a path it has nothing of.
func (o *ManifestObject) LineOf(path string) int {
	if o.doc != nil {
		segs, _ := splitPath(path)
		for n := len(segs); n > 0; n-- {
			if l := o.doc.lines[canonical(o.full(segs[:n]))]; l > 0 {
				return l
			}
		}
	}
	return o.Line
}

// full returns a path of the object as a path from its document's root.
func (o *ManifestObject) full(segs []pathSegment) []string {
	out := append([]string(nil), o.base...)
	for _, s := range segs {
		out = append(out, s.name)
	}
	return out
}

// decode checks v against target's type, reports duplicate keys under
// at, and decodes v into target as far as it can.
func (o *ManifestObject) decode(v any, at *field.Path, target any) field.ErrorList {
	c := &checker{}
	c.check(v, typeOf(target), at)
	errs := c.errs
	var atSegs []pathSegment
	if at != nil {
		atSegs, _ = splitPath(at.String())
	}
	if o.doc != nil {
		prefix := o.full(atSegs)
		for _, d := range o.doc.dups {
			if len(d.segs) <= len(prefix) || canonical(d.segs[:len(prefix)]) != canonical(prefix) {
				continue
			}
			p := typedPath(typeOf(target), at, d.segs[len(prefix):])
			errs = append(errs, &field.Error{Type: field.ErrorTypeDuplicate, Field: p.String(), BadValue: field.OmitValueType{},
				Detail: fmt.Sprintf("the key is given again on line %d (first on line %d); the last value counts", d.line, d.first)})
		}
	}
	js, err := json.Marshal(v)
	if err == nil {
		err = strictDecode(js, target)
	}
	if err != nil && len(c.errs) == 0 {
		// The check above knows every rule of the decoder; should one
		// slip through, it is still reported.
		errs = append(errs, field.Invalid(at, field.OmitValueType{}, err.Error()))
	}
	return errs
}

// typedPath builds the field path of segs below at, naming struct fields
// .name, map keys [key] and list items [i] as the types from t down say.
func typedPath(t reflect.Type, at *field.Path, segs []string) *field.Path {
	p := at
	for _, s := range segs {
		if t != nil {
			t = deref(t)
		}
		var next reflect.Type
		switch {
		case t != nil && t.Kind() == reflect.Struct && !decodesItself(t):
			next = jsonFields(t).byName[s]
			p = childPath(p, s)
		case t != nil && t.Kind() == reflect.Map:
			next = t.Elem()
			p = keyPath(p, s)
		case t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
			next = t.Elem()
			if i, err := strconv.Atoi(s); err == nil && p != nil {
				p = p.Index(i)
			} else {
				p = keyPath(p, s)
			}
		default:
			p = childPath(p, s)
		}
		t = next
	}
	return p
}

// lookup finds the value at a path of keys and indexes in the object.
func (o *ManifestObject) lookup(path string) (any, *field.Path) {
	if o.Err != nil {
		return nil, nil
	}
	segs, ok := splitPath(path)
	if !ok {
		return nil, nil
	}
	var at *field.Path
	v := o.value
	for _, s := range segs {
		switch cur := v.(type) {
		case map[string]any:
			next, found := cur[s.name]
			if !found {
				return nil, nil
			}
			if s.bracket {
				at = at.Key(s.name)
			} else {
				at = childPath(at, s.name)
			}
			v = next
		case []any:
			i, err := strconv.Atoi(s.name)
			if !s.bracket || err != nil || i < 0 || i >= len(cur) {
				return nil, nil
			}
			at, v = at.Index(i), cur[i]
		default:
			return nil, nil
		}
	}
	if v == nil || at == nil {
		return nil, nil
	}
	return v, at
}

// pathSegment is one step of a field path: a name, or what is in brackets
// (an index or a map key).
type pathSegment struct {
	name    string
	bracket bool
}

// splitPath splits "spec.modules[0].module" into its segments.
func splitPath(p string) ([]pathSegment, bool) {
	var segs []pathSegment
	for p != "" {
		switch {
		case p[0] == '[':
			end := strings.IndexByte(p, ']')
			if end < 0 {
				return nil, false
			}
			segs = append(segs, pathSegment{name: p[1:end], bracket: true})
			p = p[end+1:]
		default:
			end := strings.IndexAny(p, ".[")
			if end < 0 {
				end = len(p)
			}
			if end == 0 {
				return nil, false
			}
			segs = append(segs, pathSegment{name: p[:end]})
			p = p[end:]
		}
		if strings.HasPrefix(p, ".") {
			p = p[1:]
			if p == "" {
				return nil, false
			}
		}
	}
	return segs, len(segs) > 0
}

// childPath is p.Child(name), starting a path when p is nil.
func childPath(p *field.Path, name string) *field.Path {
	if p == nil {
		return field.NewPath(name)
	}
	return p.Child(name)
}

// document is one document of a stream and the line it starts on.
type document struct {
	text []byte
	line int
}

// splitDocuments splits a YAML stream at its "---" lines, as the API
// machinery's YAML reader does, keeping the line each document starts on.
func splitDocuments(data []byte) []document {
	var docs []document
	var cur []byte
	start := 1
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i+1], data[i+1:]
		} else {
			data = nil
		}
		if rest, ok := bytes.CutPrefix(line, []byte("---")); ok {
			if t := bytes.TrimSpace(rest); len(t) == 0 || t[0] == '#' {
				if len(cur) > 0 {
					docs = append(docs, document{text: cur, line: start})
				}
				cur, start = nil, lineNo+1
				continue
			}
		}
		cur = append(cur, line...)
	}
	if len(cur) > 0 {
		docs = append(docs, document{text: cur, line: start})
	}
	return docs
}

// lineRef matches the line numbers in YAML parser errors.
var lineRef = regexp.MustCompile(`\bline (\d+)`)

// shiftLines adds offset to the line numbers of a YAML parser error, which
// count from the start of its document, so they count from the stream's.
func shiftLines(msg string, offset int) string {
	return lineRef.ReplaceAllStringFunc(msg, func(s string) string {
		n, err := strconv.Atoi(s[len("line "):])
		if err != nil {
			return s
		}
		return "line " + strconv.Itoa(n+offset)
	})
}

// maxYAMLDepth bounds the nesting readLines follows.
const maxYAMLDepth = 1000

// readLines reads the line of every field of a document, and its
// duplicate keys. A document the YAML parser cannot read gives nothing
// (the caller reports the parser's error).
func readLines(text []byte, start int) *docInfo {
	info := &docInfo{lines: map[string]int{}}
	var root yaml3.Node
	if err := yaml3.Unmarshal(text, &root); err != nil {
		return info
	}
	var walk func(n *yaml3.Node, segs []string)
	walk = func(n *yaml3.Node, segs []string) {
		if len(segs) > maxYAMLDepth {
			return
		}
		switch n.Kind {
		case yaml3.DocumentNode:
			for _, c := range n.Content {
				walk(c, segs)
			}
		case yaml3.MappingNode:
			seen := map[string]int{}
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if k.Kind != yaml3.ScalarNode || k.Tag == "!!merge" {
					continue
				}
				cs := append(segs[:len(segs):len(segs)], k.Value)
				line := start + k.Line - 1
				if first, ok := seen[k.Value]; ok {
					info.dups = append(info.dups, duplicateKey{segs: cs, line: line, first: first})
					continue
				}
				seen[k.Value] = line
				info.lines[canonical(cs)] = line
				walk(v, cs)
			}
		case yaml3.SequenceNode:
			for i, c := range n.Content {
				cs := append(segs[:len(segs):len(segs)], strconv.Itoa(i))
				info.lines[canonical(cs)] = start + c.Line - 1
				walk(c, cs)
			}
		}
	}
	walk(&root, nil)
	return info
}

// describeJSON names the JSON type of a value, for messages.
func describeJSON(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}
