package main

import (
	"context"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/names"
)

var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

func init() {
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(coordinationv1.AddToScheme(scheme))

	// The internal versions of these types live in k8s.io/kubernetes, which is not
	// a library. Registering the v1 types again as the internal version makes
	// conversion between the two a plain copy.
	for _, r := range resources {
		internal := schema.GroupVersion{Group: r.group, Version: runtime.APIVersionInternal}
		scheme.AddKnownTypes(internal, r.newFunc(), r.newListFunc())
	}

	utilruntime.Must(scheme.AddFieldLabelConversionFunc(corev1.SchemeGroupVersion.WithKind("Pod"), podFieldLabel))
}

// podFieldLabel lists the field selectors pods accept (beyond the metadata ones).
func podFieldLabel(label, value string) (string, string, error) {
	switch label {
	case "metadata.name", "metadata.namespace", "spec.nodeName", "status.phase":
		return label, value, nil
	}
	return "", "", fmt.Errorf("field label not supported: %s", label)
}

// podAttrs gives the fields that podFieldLabel allows, for the server to filter on.
func podAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil, fmt.Errorf("not a pod: %T", obj)
	}
	fs := generic.ObjectMetaFieldsSet(&pod.ObjectMeta, true)
	fs["spec.nodeName"] = pod.Spec.NodeName
	fs["status.phase"] = string(pod.Status.Phase)
	return pod.Labels, fs, nil
}

// strategy is the create/update/delete behaviour shared by every resource: object
// metadata validation with kube-apiserver's name rules, and an optional hook that
// applies the few server-side defaults clients see from a real cluster.
type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	namespaced bool
	validName  apivalidation.ValidateNameFunc
	onCreate   func(obj runtime.Object)
	onUpdate   func(obj, old runtime.Object)
}

func (s strategy) NamespaceScoped() bool          { return s.namespaced }
func (s strategy) AllowCreateOnUpdate() bool      { return false }
func (s strategy) AllowUnconditionalUpdate() bool { return true }
func (s strategy) Canonicalize(runtime.Object)    {}

func (s strategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	if s.onCreate != nil {
		s.onCreate(obj)
	}
}

func (s strategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	if s.onUpdate != nil {
		s.onUpdate(obj, old)
	}
}

func (s strategy) Validate(_ context.Context, obj runtime.Object) field.ErrorList {
	m, err := meta.Accessor(obj)
	if err != nil {
		return field.ErrorList{field.InternalError(field.NewPath("metadata"), err)}
	}
	return apivalidation.ValidateObjectMetaAccessor(m, s.namespaced, s.validName, field.NewPath("metadata"))
}

func (s strategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	return s.Validate(ctx, obj)
}

func (s strategy) WarningsOnCreate(context.Context, runtime.Object) []string { return nil }
func (s strategy) WarningsOnUpdate(context.Context, runtime.Object, runtime.Object) []string {
	return nil
}

// resource describes one REST resource of this server.
type resource struct {
	name, singular string
	group          string
	namespaced     bool
	newFunc        func() runtime.Object
	newListFunc    func() runtime.Object
	attrs          storage.AttrFunc
	ttlSeconds     uint64 // objects expire this long after their last write (0: never)
	validName      apivalidation.ValidateNameFunc
	onCreate       func(obj runtime.Object)
	onUpdate       func(obj, old runtime.Object)
}

var resources = []resource{
	{
		name: "namespaces", singular: "namespace",
		newFunc: func() runtime.Object { return &corev1.Namespace{} }, newListFunc: func() runtime.Object { return &corev1.NamespaceList{} },
		validName: apivalidation.NameIsDNSLabel,
		onCreate: func(obj runtime.Object) {
			obj.(*corev1.Namespace).Status = corev1.NamespaceStatus{Phase: corev1.NamespaceActive}
		},
		onUpdate: func(obj, old runtime.Object) { obj.(*corev1.Namespace).Status = old.(*corev1.Namespace).Status },
	},
	{
		name: "configmaps", singular: "configmap", namespaced: true,
		newFunc: func() runtime.Object { return &corev1.ConfigMap{} }, newListFunc: func() runtime.Object { return &corev1.ConfigMapList{} },
	},
	{
		name: "secrets", singular: "secret", namespaced: true,
		newFunc: func() runtime.Object { return &corev1.Secret{} }, newListFunc: func() runtime.Object { return &corev1.SecretList{} },
		onCreate: func(obj runtime.Object) {
			if s := obj.(*corev1.Secret); s.Type == "" {
				s.Type = corev1.SecretTypeOpaque
			}
			mergeStringData(obj.(*corev1.Secret))
		},
		onUpdate: func(obj, _ runtime.Object) { mergeStringData(obj.(*corev1.Secret)) },
	},
	{
		// As in kube-apiserver, a pod's status is set through pods/status only.
		name: "pods", singular: "pod", namespaced: true,
		newFunc: func() runtime.Object { return &corev1.Pod{} }, newListFunc: func() runtime.Object { return &corev1.PodList{} },
		attrs:    podAttrs,
		onCreate: func(obj runtime.Object) { obj.(*corev1.Pod).Status = corev1.PodStatus{Phase: corev1.PodPending} },
		onUpdate: func(obj, old runtime.Object) { obj.(*corev1.Pod).Status = old.(*corev1.Pod).Status },
	},
	{
		// kube-apiserver's --event-ttl default.
		name: "events", singular: "event", namespaced: true, ttlSeconds: 3600,
		newFunc: func() runtime.Object { return &corev1.Event{} }, newListFunc: func() runtime.Object { return &corev1.EventList{} },
	},
	{
		name: "leases", singular: "lease", group: coordinationv1.GroupName, namespaced: true,
		newFunc: func() runtime.Object { return &coordinationv1.Lease{} }, newListFunc: func() runtime.Object { return &coordinationv1.LeaseList{} },
	},
}

// mergeStringData moves a secret's write-only stringData into its data, as
// kube-apiserver's conversion does.
func mergeStringData(s *corev1.Secret) {
	if len(s.StringData) > 0 && s.Data == nil {
		s.Data = map[string][]byte{}
	}
	for k, v := range s.StringData {
		s.Data[k] = []byte(v)
	}
	s.StringData = nil
}

// newStore builds the etcd-backed (and, unless disabled, watch-cached) storage of r.
func newStore(r resource, optsGetter generic.RESTOptionsGetter) (*genericregistry.Store, error) {
	validName := r.validName
	if validName == nil {
		validName = apivalidation.NameIsDNSSubdomain
	}
	s := strategy{
		ObjectTyper: scheme, NameGenerator: names.SimpleNameGenerator,
		namespaced: r.namespaced, validName: validName, onCreate: r.onCreate, onUpdate: r.onUpdate,
	}
	gr := schema.GroupResource{Group: r.group, Resource: r.name}
	store := &genericregistry.Store{
		NewFunc:                   r.newFunc,
		NewListFunc:               r.newListFunc,
		DefaultQualifiedResource:  gr,
		SingularQualifiedResource: schema.GroupResource{Group: r.group, Resource: r.singular},
		CreateStrategy:            s,
		UpdateStrategy:            s,
		DeleteStrategy:            s,
		TableConvertor:            rest.NewDefaultTableConvertor(gr),
	}
	if r.ttlSeconds > 0 {
		store.TTLFunc = func(runtime.Object, uint64, bool) (uint64, error) { return r.ttlSeconds, nil }
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: optsGetter, AttrFunc: r.attrs}); err != nil {
		return nil, err
	}
	return store, nil
}

// statusREST serves a status subresource: the main store with an update strategy
// that keeps the stored object's spec.
type statusREST struct {
	store *genericregistry.Store
}

func newStatusREST(main *genericregistry.Store, keepSpec func(obj, old runtime.Object)) *statusREST {
	s := *main
	st := main.UpdateStrategy.(strategy)
	st.onUpdate = keepSpec
	s.UpdateStrategy = st
	return &statusREST{store: &s}
}

func (r *statusREST) New() runtime.Object { return r.store.New() }

// Destroy does nothing: the storage is shared with the main resource, which owns it.
func (r *statusREST) Destroy() {}

func (r *statusREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	return r.store.Get(ctx, name, options)
}

func (r *statusREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	// Status updates never create the object.
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
}

// keepPodSpec: on pods/status the spec cannot change (metadata can, as in
// kube-apiserver: managed fields, labels, annotations).
func keepPodSpec(obj, old runtime.Object) {
	obj.(*corev1.Pod).Spec = old.(*corev1.Pod).Spec
}
