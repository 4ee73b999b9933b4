package v1beta1

import (
	"encoding"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/validation/field"
	kjson "sigs.k8s.io/json"
)

// checker compares a decoded JSON value with the Go type it is to be
// decoded into, as the API server's strict decoding does, and collects a
// field error for each unknown field and each value of the wrong type.
type checker struct {
	errs field.ErrorList
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// typeOf returns the type a pointer target points to.
func typeOf(target any) reflect.Type {
	return reflect.TypeOf(target).Elem()
}

// decodesItself says whether values of t decode with their own method.
func decodesItself(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return t.Implements(jsonUnmarshaler) || p.Implements(jsonUnmarshaler) || t.Implements(textUnmarshaler) || p.Implements(textUnmarshaler)
}

// check checks v, found at p (nil: the root), against t.
func (c *checker) check(v any, t reflect.Type, p *field.Path) {
	if v == nil {
		return // null decodes as the zero value anywhere
	}
	t = deref(t)
	if decodesItself(t) {
		c.leaf(v, t, p)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			c.typeError(p, v, "must be an object")
			return
		}
		fields := jsonFields(t)
		for _, k := range sortedKeys(obj) {
			f, ok := fields.byName[k]
			if !ok {
				detail := unknownField(k, fields.names)
				if strings.HasPrefix(t.PkgPath(), "k8s.io/api/") {
					detail += fmt.Sprintf("; Kubernetes %s's %s has no such field (a field of a newer Kubernetes?)", KubernetesAPIVersion, t.Name())
				}
				c.errs = append(c.errs, field.Forbidden(childPath(p, k), detail))
				continue
			}
			c.check(obj[k], f, childPath(p, k))
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			c.typeError(p, v, "must be an object")
			return
		}
		if t.Key().Kind() != reflect.String {
			c.leaf(v, t, p)
			return
		}
		for _, k := range sortedKeys(obj) {
			c.check(obj[k], t.Elem(), keyPath(p, k))
		}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			c.leaf(v, t, p) // []byte is a base64 string
			return
		}
		list, ok := v.([]any)
		if !ok {
			c.typeError(p, v, "must be a list")
			return
		}
		for i, item := range list {
			c.check(item, t.Elem(), p.Index(i))
		}
	case reflect.Interface:
		// Anything goes.
	default:
		c.leaf(v, t, p)
	}
}

// leaf decodes v into a new value of t and reports a failure at p.
func (c *checker) leaf(v any, t reflect.Type, p *field.Path) {
	js, err := json.Marshal(v)
	if err != nil {
		c.typeError(p, v, err.Error())
		return
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, reflect.New(t).Interface()); err != nil {
		c.typeError(p, v, expected(t, v, err))
	}
}

// typeError records a value of the wrong type; objects and lists are not
// printed.
func (c *checker) typeError(p *field.Path, v any, detail string) {
	var shown any = field.OmitValueType{}
	switch v := v.(type) {
	case string, bool:
		shown = v
	case json.Number:
		shown = v.String()
	default:
		detail += ", not " + describeJSON(v)
	}
	if p == nil {
		p = field.NewPath("<root>")
	}
	c.errs = append(c.errs, field.TypeInvalid(p, shown, detail))
}

// expected says what a value of t must be.
func expected(t reflect.Type, v any, err error) string {
	if decodesItself(t) {
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	switch t.Kind() {
	case reflect.String:
		return "must be a string"
	case reflect.Bool:
		return "must be a boolean (true or false)"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if _, isNum := v.(json.Number); isNum && isInteger(v) {
			bits := t.Bits()
			return fmt.Sprintf("must be an integer from %d to %d", int64(-1)<<(bits-1), int64(math.MaxInt64>>(64-bits)))
		}
		return "must be an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "must be a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "must be a number"
	case reflect.Map, reflect.Struct:
		return "must be an object"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// isInteger says whether a JSON number has no fraction or exponent.
func isInteger(v any) bool {
	n, _ := v.(json.Number)
	return !strings.ContainsAny(n.String(), ".eE")
}

// structFields are the JSON fields of a struct type, embedded structs'
// included.
type structFields struct {
	byName map[string]reflect.Type
	names  []string // in declaration order
}

// jsonFields lists the JSON fields of t as encoding/json sees them: tags
// name them, "-" hides them, and untagged embedded structs lend theirs
// (a shallower field wins).
func jsonFields(t reflect.Type) structFields {
	out := structFields{byName: map[string]reflect.Type{}}
	var embedded []reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" && f.Tag.Get("json") == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			if et := deref(f.Type); et.Kind() == reflect.Struct {
				embedded = append(embedded, et)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, dup := out.byName[name]; !dup {
			out.byName[name] = f.Type
			out.names = append(out.names, name)
		}
	}
	for _, et := range embedded {
		inner := jsonFields(et)
		for _, n := range inner.names {
			if _, dup := out.byName[n]; !dup {
				out.byName[n] = inner.byName[n]
				out.names = append(out.names, n)
			}
		}
	}
	return out
}

// unknownField explains an unknown field: the known field it is nearest
// to, or, when none is near, the known fields.
func unknownField(key string, known []string) string {
	if s := nearest(key, known); s != "" {
		return fmt.Sprintf("unknown field; did you mean %q?", s)
	}
	if len(known) == 0 {
		return "unknown field; nothing may be set here"
	}
	if len(known) > 12 {
		return "unknown field"
	}
	return "unknown field; the fields here are " + strings.Join(known, ", ")
}

// nearest returns the known name most like key: by edit distance ignoring
// case (at most a third of key's length, and at least 2), or else one
// that contains key or that key contains; "" when none is near.
func nearest(key string, known []string) string {
	if utf8.RuneCountInString(key) > maxEditLength {
		return ""
	}
	lk := strings.ToLower(key)
	best, bestD := "", math.MaxInt
	for _, n := range known {
		d := editDistance(lk, strings.ToLower(n))
		if d < bestD {
			best, bestD = n, d
		}
	}
	if best != "" && (bestD <= 2 || 3*bestD <= utf8.RuneCountInString(key)) {
		return best
	}
	if utf8.RuneCountInString(key) < 4 {
		return ""
	}
	best, bestD = "", math.MaxInt
	for _, n := range known {
		ln := strings.ToLower(n)
		if strings.Contains(ln, lk) || (len(ln) >= 4 && strings.Contains(lk, ln)) {
			if d := editDistance(lk, ln); d < bestD {
				best, bestD = n, d
			}
		}
	}
	return best
}

// maxEditLength bounds the keys nearest compares: a longer key is near
// no field name.
const maxEditLength = 256

// editDistance is the Levenshtein distance between a and b, in runes;
// callers keep a and b within maxEditLength runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// keyPath is p.Key(k), for a map's entry.
func keyPath(p *field.Path, k string) *field.Path {
	if p == nil {
		return field.NewPath(k)
	}
	return p.Key(k)
}

// sortedKeys returns an object's keys in order, for stable reports.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// strictDecode decodes js into target as the API server does, and fails
// on what strict decoding refuses.
func strictDecode(js []byte, target any) error {
	strict, err := kjson.UnmarshalStrict(js, target)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return fmt.Errorf("%s", strings.Join(msgs, "; "))
	}
	return nil
}
