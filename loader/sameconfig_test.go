package loader

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// fill sets v, a field of ModuleConfig, to one of a few values drawn
// from r: zero, empty or not for lists, nil or not for pointers. It knows
// kinds, not fields, so a field added to ModuleConfig is filled too.
func fill(t *testing.T, r *rand.Rand, v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString([]string{"", "a", "b"}[r.IntN(3)])
	case reflect.Bool:
		v.SetBool(r.IntN(2) == 1)
	case reflect.Slice:
		switch r.IntN(4) {
		case 0:
			v.Set(reflect.Zero(v.Type()))
		case 1:
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		default:
			s := reflect.MakeSlice(v.Type(), 1+r.IntN(2), 2)
			for i := 0; i < s.Len(); i++ {
				fill(t, r, s.Index(i))
			}
			v.Set(s)
		}
	case reflect.Pointer:
		if r.IntN(3) == 0 {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		p := reflect.New(v.Type().Elem())
		fill(t, r, p.Elem())
		v.Set(p)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			fill(t, r, v.Field(i))
		}
	default:
		t.Fatalf("fill: ModuleConfig has a field of kind %s; teach fill and sameConfig about it", v.Kind())
	}
}

// TestSameConfigSeesEveryField: on random configs, sameConfig agrees with
// equality.Semantic.DeepEqual, which the loader used before and which
// sees every field, including ones added later.
func TestSameConfigSeesEveryField(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	differ, same := 0, 0
	for i := 0; i < 200000; i++ {
		var a, b v1beta1.ModuleConfig
		fill(t, r, reflect.ValueOf(&a).Elem())
		if r.IntN(2) == 0 {
			b = *a.DeepCopy()
			// One field of b drawn again: often the same value, sometimes
			// nil for empty, sometimes another.
			f := reflect.ValueOf(&b).Elem()
			for f.Kind() == reflect.Struct {
				f = f.Field(r.IntN(f.NumField()))
			}
			fill(t, r, f)
		} else {
			fill(t, r, reflect.ValueOf(&b).Elem())
		}
		want := equality.Semantic.DeepEqual(a, b)
		if got := sameConfig(&a, &b); got != want {
			t.Fatalf("sameConfig = %v, DeepEqual = %v for\n%#v\n%#v", got, want, a, b)
		}
		if want {
			same++
		} else {
			differ++
		}
	}
	if same < 1000 || differ < 1000 {
		t.Fatalf("the draw is lopsided: %d same, %d differ", same, differ)
	}
}
