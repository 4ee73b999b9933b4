// Package fakeapi is client-go's fake clientset with the parts of the API
// server's behaviour that tests of stale caches depend on and the plain
// fake leaves out: every object gets a UID and a creation time, every
// write a new resource version, an update based on an old resource version
// conflicts, and a delete honours its UID and resource version
// preconditions. Several clientsets may share one Server, each with its
// own record of actions (who did what).
package fakeapi

import (
	"fmt"
	"strconv"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	k8stesting "k8s.io/client-go/testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Server is an in-memory API server.
type Server struct {
	tracker k8stesting.ObjectTracker
	rv      atomic.Int64
	uid     atomic.Int64
}

// New returns a Server holding objs.
func New(objs ...runtime.Object) (*Server, error) {
	s := &Server{}
	s.tracker = tracker{ObjectTracker: k8stesting.NewObjectTracker(scheme.Scheme, scheme.Codecs.UniversalDecoder()), s: s}
	for _, o := range objs {
		if err := s.tracker.Add(o); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Client returns a new clientset on s, with its own record of actions.
func (s *Server) Client() *k8sfake.Clientset {
	cs := k8sfake.NewClientset() // for its discovery; its own tracker is not used
	cs.ReactionChain, cs.WatchReactionChain, cs.ProxyReactionChain = nil, nil, nil
	cs.AddReactor("*", "*", k8stesting.ObjectReaction(s.tracker))
	cs.AddWatchReactor("*", func(action k8stesting.Action) (bool, watch.Interface, error) {
		var opts metav1.ListOptions
		if w, ok := action.(k8stesting.WatchActionImpl); ok {
			opts = w.ListOptions
		}
		w, err := s.tracker.Watch(action.GetResource(), action.GetNamespace(), opts)
		return err == nil, w, err
	})
	return cs
}

func (s *Server) nextRV() string { return strconv.FormatInt(s.rv.Add(1), 10) }

// tracker adds UIDs, creation times, resource versions and preconditions.
type tracker struct {
	k8stesting.ObjectTracker
	s *Server
}

func (t tracker) Add(obj runtime.Object) error {
	if m, err := meta.Accessor(obj); err == nil {
		t.stamp(m)
	}
	return t.ObjectTracker.Add(obj)
}

func (t tracker) stamp(m metav1.Object) {
	if m.GetUID() == "" {
		m.SetUID(types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012d", t.s.uid.Add(1))))
	}
	if ts := m.GetCreationTimestamp(); ts.IsZero() {
		m.SetCreationTimestamp(metav1.Now())
	}
	m.SetResourceVersion(t.s.nextRV())
}

func (t tracker) Create(gvr schema.GroupVersionResource, obj runtime.Object, ns string, opts ...metav1.CreateOptions) error {
	obj = obj.DeepCopyObject() // the caller's object stays as it was
	m, err := meta.Accessor(obj)
	if err != nil {
		return err
	}
	if _, err := t.ObjectTracker.Get(gvr, ns, m.GetName()); err == nil {
		return apierrors.NewAlreadyExists(gvr.GroupResource(), m.GetName())
	}
	m.SetUID("")
	m.SetCreationTimestamp(metav1.Time{})
	t.stamp(m)
	return t.ObjectTracker.Create(gvr, obj, ns, opts...)
}

func (t tracker) Update(gvr schema.GroupVersionResource, obj runtime.Object, ns string, opts ...metav1.UpdateOptions) error {
	obj = obj.DeepCopyObject()
	m, err := meta.Accessor(obj)
	if err != nil {
		return err
	}
	cur, err := t.current(gvr, ns, m.GetName())
	if err != nil {
		return err
	}
	if rv := m.GetResourceVersion(); rv != "" && rv != cur.GetResourceVersion() {
		return apierrors.NewConflict(gvr.GroupResource(), m.GetName(),
			fmt.Errorf("the object has been modified; resource version %s is not the current %s", rv, cur.GetResourceVersion()))
	}
	m.SetUID(cur.GetUID())
	m.SetCreationTimestamp(cur.GetCreationTimestamp())
	m.SetResourceVersion(t.s.nextRV())
	return t.ObjectTracker.Update(gvr, obj, ns, opts...)
}

func (t tracker) Patch(gvr schema.GroupVersionResource, obj runtime.Object, ns string, opts ...metav1.PatchOptions) error {
	m, err := meta.Accessor(obj)
	if err != nil {
		return err
	}
	m.SetResourceVersion(t.s.nextRV())
	return t.ObjectTracker.Patch(gvr, obj, ns, opts...)
}

func (t tracker) Delete(gvr schema.GroupVersionResource, ns, name string, opts ...metav1.DeleteOptions) error {
	cur, err := t.current(gvr, ns, name)
	if err != nil {
		return err
	}
	for _, o := range opts {
		p := o.Preconditions
		if p == nil {
			continue
		}
		if p.UID != nil && *p.UID != cur.GetUID() {
			return apierrors.NewConflict(gvr.GroupResource(), name, fmt.Errorf("precondition failed: UID in precondition: %s, UID in object meta: %s", *p.UID, cur.GetUID()))
		}
		if p.ResourceVersion != nil && *p.ResourceVersion != cur.GetResourceVersion() {
			return apierrors.NewConflict(gvr.GroupResource(), name, fmt.Errorf("precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object meta: %s", *p.ResourceVersion, cur.GetResourceVersion()))
		}
	}
	return t.ObjectTracker.Delete(gvr, ns, name, opts...)
}

func (t tracker) current(gvr schema.GroupVersionResource, ns, name string) (metav1.Object, error) {
	obj, err := t.ObjectTracker.Get(gvr, ns, name)
	if err != nil {
		return nil, err
	}
	return meta.Accessor(obj)
}
