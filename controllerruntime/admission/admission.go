// Package admission refuses invalid Modules, and invalid ModuleSpecs
// embedded in an operator's own kind, before the API server stores them:
// controller-runtime validating webhooks (webhook.CustomValidator) that
// apply every rule of KMM's admission webhook and CRD (v1beta1.Validate,
// v1beta1.ValidateUpdate, v1beta1.ValidateSpec) and answer with all the
// errors, each naming its field.
//
//	if err := admission.SetupModuleWebhook(mgr); err != nil { … } // path ModulePath
//
// kmmkit's Reconciler validates every pass anyway (an invalid spec gets
// Valid=False and changes nothing in the cluster); the webhook moves the
// error to the moment a user applies the object. Updates of an object
// that is being deleted are always allowed, and so are updates that leave
// the spec as it is (a label, say, on an object stored before the webhook
// existed), with the errors as warnings, so the webhook never holds a
// finalizer or an object hostage. spec.dra is refused, as kmmkit's
// Reconciler refuses it (v1beta1.WithoutDRA): kmmkit runs no DRA driver.
package admission

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// ModulePath is where SetupModuleWebhook serves ModuleValidator (the path
// controller-runtime derives from the Module's group, version and kind).
const ModulePath = "/validate-kmm-sigs-x-k8s-io-v1beta1-module"

var moduleKind = schema.GroupKind{Group: v1beta1.GroupName, Kind: v1beta1.Kind}

// ModuleValidator validates KMM's Module: v1beta1.Validate on creation,
// v1beta1.ValidateUpdate on update. Deletions are allowed.
type ModuleValidator struct{}

var _ admission.CustomValidator = ModuleValidator{}

// ValidateCreate implements admission.CustomValidator.
func (ModuleValidator) ValidateCreate(_ context.Context, obj runtime.Object) (admission.Warnings, error) {
	m, err := asModule(obj)
	if err != nil {
		return nil, err
	}
	return nil, invalid(moduleKind, m.Name, v1beta1.Validate(m, rules()...))
}

// ValidateUpdate implements admission.CustomValidator.
func (ModuleValidator) ValidateUpdate(_ context.Context, oldObj, newObj runtime.Object) (admission.Warnings, error) {
	older, err := asModule(oldObj)
	if err != nil {
		return nil, err
	}
	newer, err := asModule(newObj)
	if err != nil {
		return nil, err
	}
	errs := v1beta1.ValidateUpdate(older, newer, rules()...)
	if newer.DeletionTimestamp != nil || equality.Semantic.DeepEqual(older.Spec, newer.Spec) {
		return warnings(errs), nil
	}
	return nil, invalid(moduleKind, newer.Name, errs)
}

// ValidateDelete implements admission.CustomValidator: deletions are
// always allowed.
func (ModuleValidator) ValidateDelete(context.Context, runtime.Object) (admission.Warnings, error) {
	return nil, nil
}

// rules are the options of every validation: kmmkit's Reconciler's.
func rules() []v1beta1.ValidateOption { return []v1beta1.ValidateOption{v1beta1.WithoutDRA()} }

func asModule(obj runtime.Object) (*v1beta1.Module, error) {
	m, ok := obj.(*v1beta1.Module)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("expected a %s, got a %T", moduleKind, obj))
	}
	return m, nil
}

// SpecValidator validates the ModuleSpec embedded in objects of an
// operator's kind T with v1beta1.ValidateSpec at Path, on creation and on
// update. Deletions are allowed.
type SpecValidator[T client.Object] struct {
	// Kind is T's group and kind, for the error the API server returns.
	Kind schema.GroupKind
	// Spec returns the embedded spec of an object: d.Spec.Module, or
	// d.Spec.Module.ModuleSpec() for a v1beta1.EmbeddedModuleSpec.
	Spec func(T) v1beta1.ModuleSpec
	// Path is where Spec sits: field.NewPath("spec", "module"). Nil
	// means "spec".
	Path *field.Path
}

// ValidateCreate implements admission.CustomValidator.
func (v SpecValidator[T]) ValidateCreate(_ context.Context, obj runtime.Object) (admission.Warnings, error) {
	o, err := v.as(obj)
	if err != nil {
		return nil, err
	}
	return nil, invalid(v.Kind, o.GetName(), v1beta1.ValidateSpec(ptr.To(v.Spec(o)), v.path(), rules()...))
}

// ValidateUpdate implements admission.CustomValidator.
func (v SpecValidator[T]) ValidateUpdate(_ context.Context, oldObj, newObj runtime.Object) (admission.Warnings, error) {
	older, err := v.as(oldObj)
	if err != nil {
		return nil, err
	}
	newer, err := v.as(newObj)
	if err != nil {
		return nil, err
	}
	errs := v1beta1.ValidateSpecUpdate(ptr.To(v.Spec(older)), ptr.To(v.Spec(newer)), v.path(), rules()...)
	if newer.GetDeletionTimestamp() != nil || equality.Semantic.DeepEqual(v.Spec(older), v.Spec(newer)) {
		return warnings(errs), nil
	}
	return nil, invalid(v.Kind, newer.GetName(), errs)
}

// ValidateDelete implements admission.CustomValidator: deletions are
// always allowed.
func (v SpecValidator[T]) ValidateDelete(context.Context, runtime.Object) (admission.Warnings, error) {
	return nil, nil
}

func (v SpecValidator[T]) as(obj runtime.Object) (T, error) {
	o, ok := obj.(T)
	if !ok {
		return o, apierrors.NewBadRequest(fmt.Sprintf("expected a %T, got a %T", o, obj))
	}
	return o, nil
}

func (v SpecValidator[T]) path() *field.Path {
	if v.Path == nil {
		return field.NewPath("spec")
	}
	return v.Path
}

// invalid is the API's Invalid error (422) for errs, nil without errors:
// the API server shows the user every error with its field path.
func invalid(kind schema.GroupKind, name string, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(kind, name, errs)
}

func warnings(errs field.ErrorList) admission.Warnings {
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return admission.Warnings{"the spec breaks rules (allowed, since this update leaves it unchanged): " + strings.Join(msgs, "; ")}
}

// SetupModuleWebhook serves ModuleValidator at ModulePath on mgr's webhook
// server. mgr's scheme must know v1beta1.
func SetupModuleWebhook(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr).For(&v1beta1.Module{}).WithValidator(ModuleValidator{}).Complete()
}

// SetupSpecWebhook serves v for kind T on mgr's webhook server, at the
// path controller-runtime derives from T's group, version and kind
// (/validate-<group with dashes>-<version>-<kind in lower case>). v.Kind
// is filled from mgr's scheme when empty.
func SetupSpecWebhook[T client.Object](mgr ctrl.Manager, obj T, v SpecValidator[T]) error {
	if v.Spec == nil {
		return fmt.Errorf("admission: SpecValidator for %T needs Spec", obj)
	}
	if v.Kind.Kind == "" {
		gvks, _, err := mgr.GetScheme().ObjectKinds(obj)
		if err != nil || len(gvks) == 0 {
			return fmt.Errorf("admission: the manager's scheme does not know %T: %w", obj, err)
		}
		v.Kind = gvks[0].GroupKind()
	}
	return ctrl.NewWebhookManagedBy(mgr).For(obj).WithValidator(v).Complete()
}
