package v1beta1

import (
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// ValidateImageReference applies the rule every image reference of a
// Module follows, as written (${VAR} templates included): it names a tag
// or a digest explicitly — on its last path segment, so
// registry:5000/repo, which KMM accepts because of the port's colon, is
// refused — and holds no whitespace. Validate applies it to every image
// field; `kmm image check` to the reference it is given.
func ValidateImageReference(image string, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	lastSegment := image[strings.LastIndexByte(image, '/')+1:]
	if !strings.Contains(image, "@") && !strings.Contains(lastSegment, ":") {
		errs = append(errs, field.Invalid(fldPath, image, "container image must explicitly set a tag or digest"))
	}
	if strings.ContainsAny(image, " \t\n") {
		errs = append(errs, field.Invalid(fldPath, image, "must not contain whitespace"))
	}
	return errs
}
