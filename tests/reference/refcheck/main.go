// Command refcheck validates files with Kubernetes' own code, compiled from the same
// k8s.io/kubernetes version as the reference binaries (tests/reference/build.sh builds it).
//
//	refcheck pod FILE...             strict v1 Pod decode + the kubelet's static-pod validation
//	refcheck kubelet-config FILE     kubelet config file loader + ValidateKubeletConfiguration
//	refcheck kubeconfig FILE         clientcmd load + clientcmd.Validate
//	refcheck version                 the Kubernetes version it was built from
//
// Exit status: 0 valid, 1 invalid (errors on stderr, one "FILE: error" per line), 2 usage.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/cgroups"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/version"
	"k8s.io/kubernetes/pkg/api/legacyscheme"
	podutil "k8s.io/kubernetes/pkg/api/pod"
	api "k8s.io/kubernetes/pkg/apis/core"
	_ "k8s.io/kubernetes/pkg/apis/core/install"
	"k8s.io/kubernetes/pkg/apis/core/validation"
	_ "k8s.io/kubernetes/pkg/features" // registers the Kubernetes feature gates and their defaults
	kubeletscheme "k8s.io/kubernetes/pkg/kubelet/apis/config/scheme"
	kubeletconfigvalidation "k8s.io/kubernetes/pkg/kubelet/apis/config/validation"
	"k8s.io/kubernetes/pkg/kubelet/kubeletconfig/configfiles"
	utilfs "k8s.io/kubernetes/pkg/util/filesystem"
)

// nodeName stands in for the kubelet's node name, which it appends to static pod names.
const nodeName = "refcheck-node"

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	var errs []string
	switch {
	case cmd == "version" && len(args) == 0:
		fmt.Println(version.Get().GitVersion)
		return
	case cmd == "pod" && len(args) >= 1:
		for _, f := range args {
			errs = append(errs, prefix(f, checkPod(f))...)
		}
	case cmd == "kubelet-config" && len(args) == 1:
		errs = prefix(args[0], checkKubeletConfig(args[0]))
	case cmd == "kubeconfig" && len(args) == 1:
		errs = prefix(args[0], checkKubeconfig(args[0]))
	default:
		usage()
	}
	for _, e := range errs {
		fmt.Fprintln(os.Stderr, e)
	}
	if len(errs) > 0 {
		os.Exit(1)
	}
	fmt.Println("ok")
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: refcheck pod FILE... | kubelet-config FILE | kubeconfig FILE | version")
	os.Exit(2)
}

func prefix(file string, errs []string) []string {
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		out = append(out, file+": "+e)
	}
	return out
}

// checkPod follows the kubelet's static pod path (pkg/kubelet/config/common.go: decode with
// legacyscheme into the internal type, which defaults and converts; apply the kubelet's static pod
// defaults; ValidatePodCreate with the options derived from the spec; refuse API object references),
// except that decoding is strict: unknown or duplicate fields are errors.
func checkPod(file string) []string {
	data, err := os.ReadFile(file)
	if err != nil {
		return []string{err.Error()}
	}
	jsonData, err := utilyaml.ToJSON(data)
	if err != nil {
		return []string{"not YAML/JSON: " + err.Error()}
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(jsonData, &tm); err != nil {
		return []string{"decode: " + err.Error()}
	}
	if tm.APIVersion != "v1" || tm.Kind != "Pod" {
		return []string{fmt.Sprintf("expected apiVersion v1, kind Pod; got apiVersion %q, kind %q", tm.APIVersion, tm.Kind)}
	}
	strict := serializer.NewCodecFactory(legacyscheme.Scheme, serializer.EnableStrict)
	obj, _, err := strict.UniversalDeserializer().Decode(jsonData, nil, nil)
	if err != nil {
		return []string{"decode: " + err.Error()}
	}
	legacyscheme.Scheme.Default(obj)
	pod := &api.Pod{}
	if err := legacyscheme.Scheme.Convert(obj, pod, nil); err != nil {
		return []string{"convert: " + err.Error()}
	}
	if pod.Name == "" {
		return []string{"metadata.name: Required value: name is needed for the pod"}
	}
	// The kubelet's applyDefaults for file sources (UID, config-hash annotation and the default
	// NoExecute toleration left out: they cannot make a pod invalid).
	pod.Name = pod.Name + "-" + nodeName
	if pod.Namespace == "" {
		pod.Namespace = "default"
	}
	pod.Spec.NodeName = nodeName

	var errs []string
	opts := podutil.GetValidationOptionsFromPodSpecAndMeta(&pod.Spec, nil, &pod.ObjectMeta, nil)
	for _, e := range validation.ValidatePodCreate(pod, opts) {
		errs = append(errs, e.Error())
	}
	if _, resource, err := podutil.HasAPIObjectReference(pod); err != nil {
		errs = append(errs, err.Error())
	} else if resource != "" {
		errs = append(errs, "static pods may not reference "+resource)
	}
	return errs
}

// hostDependent are the errors ValidateKubeletConfiguration raises because of the host it runs on
// (validation_linux.go, on a cgroup v1 host) rather than because of the file; refcheck validates a
// file as for a cgroup v2 host, so it drops them when it happens to run on cgroup v1.
var hostDependent = []string{
	"kubelet is configured to not run on a host using cgroup v1",
	"invalid configuration: singleProcessOOMKill must not be explicitly set to false when using cgroup v1",
}

// checkKubeletConfig loads the file with the kubelet's own loader (defaults applied, relative
// paths resolved) and validates it as the kubelet does, against the default feature gates plus
// the file's featureGates.  The kubelet falls back to lenient decoding (with a logged warning)
// when strict decoding fails; refcheck reports the strict decoding error instead.  The kubelet's
// defaulting panics on an unknown feature gate; refcheck reports that panic as an error.
func checkKubeletConfig(file string) (errs []string) {
	defer func() {
		if r := recover(); r != nil {
			errs = []string{fmt.Sprintf("the kubelet's config loading panics: %v", r)}
		}
	}()
	abs, err := filepath.Abs(file)
	if err != nil {
		return []string{err.Error()}
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return []string{err.Error()}
	}
	_, strict, err := kubeletscheme.NewSchemeAndCodecs(serializer.EnableStrict)
	if err != nil {
		return []string{err.Error()}
	}
	if _, _, err := strict.UniversalDecoder().Decode(data, nil, nil); err != nil {
		return []string{"decode: " + err.Error()}
	}
	loader, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, abs)
	if err != nil {
		return []string{err.Error()}
	}
	kc, err := loader.Load(context.Background())
	if err != nil {
		return []string{"load: " + err.Error()}
	}
	if err := kubeletconfigvalidation.ValidateKubeletConfiguration(kc, utilfeature.DefaultFeatureGate); err != nil {
		for _, e := range flatten(err) {
			if !cgroups.IsCgroup2UnifiedMode() && slices.ContainsFunc(hostDependent, func(p string) bool {
				return strings.HasPrefix(e, p)
			}) {
				continue
			}
			errs = append(errs, e)
		}
	}
	return errs
}

// checkKubeconfig loads a kubeconfig with client-go and runs clientcmd.Validate.
func checkKubeconfig(file string) []string {
	cfg, err := clientcmd.LoadFromFile(file)
	if err != nil {
		return []string{"load: " + err.Error()}
	}
	if err := clientcmd.Validate(*cfg); err != nil {
		return flatten(err)
	}
	return nil
}

// flatten turns an aggregate error into one string per error.
func flatten(err error) []string {
	var out []string
	if agg, ok := err.(utilerrors.Aggregate); ok {
		for _, e := range utilerrors.Flatten(agg).Errors() {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}
