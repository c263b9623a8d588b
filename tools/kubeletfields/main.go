// Command kubeletfields prints the field table of kubelet.config.k8s.io/v1beta1 KubeletConfiguration as JSON,
// by reflecting over the Go type of the k8s.io/kubelet module it is built against (json tags, Go kinds, and
// the few types with their own JSON encoding). tools/gen_component_tables.py builds it in a throw-away
// module and writes kubeboot/config/data/kubelet-config-v1beta1.json.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"runtime/debug"
	"strings"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// Type is one node of the table: kind is bool, int, float, string, duration, duration-or-int, quantity, time,
// list, map or struct.
type Type struct {
	Kind   string           `json:"kind"`
	Go     string           `json:"go"`
	Bits   int              `json:"bits,omitempty"`
	Signed *bool            `json:"signed,omitempty"`
	Items  *Type            `json:"items,omitempty"`
	Values *Type            `json:"values,omitempty"`
	Fields map[string]*Type `json:"fields,omitempty"`
}

// Types that marshal themselves; anything else implementing json.Unmarshaler stops the generator.
var special = map[string]string{
	"k8s.io/apimachinery/pkg/apis/meta/v1.Duration":        "duration",
	"k8s.io/apimachinery/pkg/apis/meta/v1.Time":            "time",
	"k8s.io/apimachinery/pkg/api/resource.Quantity":        "quantity",
	"k8s.io/apimachinery/pkg/api/resource.QuantityValue":   "quantity",
	"k8s.io/component-base/logs/api/v1.TimeOrMetaDuration": "duration-or-int", // string, or an integer of nanoseconds
}

var unmarshaler = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()

func name(t reflect.Type) string {
	if t.PkgPath() == "" {
		return t.String()
	}
	return t.PkgPath() + "." + t.Name()
}

func describe(t reflect.Type, stack []string) *Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if k, ok := special[name(t)]; ok {
		return &Type{Kind: k, Go: t.String()}
	}
	if reflect.PointerTo(t).Implements(unmarshaler) && t.Kind() != reflect.Slice {
		fail("%s implements json.Unmarshaler: add it to the special table", name(t))
	}
	out := &Type{Go: t.String()}
	switch t.Kind() {
	case reflect.Bool:
		out.Kind = "bool"
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
		out.Kind, out.Bits, out.Signed = "int", t.Bits(), ptr(true)
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		out.Kind, out.Bits, out.Signed = "int", t.Bits(), ptr(false)
	case reflect.Float32, reflect.Float64:
		out.Kind = "float"
	case reflect.String:
		out.Kind = "string"
	case reflect.Slice, reflect.Array:
		out.Kind, out.Items = "list", describe(t.Elem(), stack)
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			fail("%s: map key %s is not a string", t, t.Key())
		}
		out.Kind, out.Values = "map", describe(t.Elem(), stack)
	case reflect.Struct:
		for _, s := range stack {
			if s == name(t) {
				fail("recursive type %s", name(t))
			}
		}
		out.Kind, out.Fields = "struct", map[string]*Type{}
		fields(t, append(stack, name(t)), out.Fields)
	default:
		fail("%s: unsupported kind %s", t, t.Kind())
	}
	return out
}

// fields adds t's JSON fields (inline/embedded structs flattened, as encoding/json does) to into.
func fields(t reflect.Type, stack []string, into map[string]*Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		jsonName, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && jsonName == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if name(ft) == "k8s.io/apimachinery/pkg/apis/meta/v1.TypeMeta" {
				continue // apiVersion and kind: set by whoever writes the document
			}
			if ft.Kind() == reflect.Struct {
				fields(ft, stack, into)
				continue
			}
		}
		_ = opts
		if jsonName == "" {
			jsonName = f.Name
		}
		into[jsonName] = describe(f.Type, stack)
	}
}

func ptr(b bool) *bool { return &b }

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kubeletfields: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	version := "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "k8s.io/kubelet" {
				version = dep.Version
			}
		}
	}
	root := describe(reflect.TypeOf(kubeletv1beta1.KubeletConfiguration{}), nil)
	doc := map[string]any{
		"source":    "k8s.io/kubelet@" + version + " config/v1beta1 KubeletConfiguration",
		"generator": "tools/gen_component_tables.py kubelet",
		"fields":    root.Fields,
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(doc); err != nil {
		fail("%v", err)
	}
}
