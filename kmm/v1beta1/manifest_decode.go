package v1beta1

import (
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Decode decodes the object strictly into target, a pointer to any API
// type (a Secret, a ConfigMap, …), with every problem decoding met, as
// Module does for a Module: unknown fields, duplicate keys and values of
// the wrong type, each with its field path (LineOf gives its line). It
// applies no defaults.
func (o *ManifestObject) Decode(target any) field.ErrorList {
	if o.Err != nil {
		return field.ErrorList{field.Invalid(field.NewPath("document"), field.OmitValueType{}, o.Err.Error())}
	}
	return o.decode(o.value, nil, target)
}
