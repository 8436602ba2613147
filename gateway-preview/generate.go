package main

// Building the ingress gateway's listeners with istiod's own config generator, in-process.

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/schema/gvk"
	"istio.io/istio/pkg/test"
)

// gatewayPodIP is the address the simulated gateway pod has; nothing routes to it.
const gatewayPodIP = "10.244.0.10"

// MeshAndProxyConfig computes the mesh config istiod runs with and the ProxyConfig the gateway's
// istio-agent reports, with Istio's own merge functions: the mesh defaults, then the istiod
// release's meshConfig, then the pod's proxy.istio.io/config annotation (as pilot-agent does).
func MeshAndProxyConfig(s *RenderedStack) (*meshconfig.MeshConfig, *meshconfig.ProxyConfig, error) {
	mc := mesh.DefaultMeshConfig()
	if s.MeshConfigYAML != "" {
		applied, err := mesh.ApplyMeshConfig(s.MeshConfigYAML, mc)
		if err != nil {
			return nil, nil, fmt.Errorf("istiod meshConfig: %v", err)
		}
		mc = applied
	}
	pc := mc.GetDefaultConfig()
	if s.ProxyConfigAnnotation != "" {
		withPod, err := mesh.ApplyProxyConfig(s.ProxyConfigAnnotation, mc)
		if err != nil {
			return nil, nil, fmt.Errorf("%s annotation: %v", proxyConfigAnnotation, err)
		}
		pc = withPod.GetDefaultConfig()
	}
	return mc, pc, nil
}

// GatewayRun is istiod's view of the stack's gateway: the fake discovery server and the proxy.
type GatewayRun struct {
	Server *xds.FakeDiscoveryServer
	Proxy  *model.Proxy
	Stack  *RenderedStack
}

// Listeners returns the gateway's LDS, sorted by name.
func (g *GatewayRun) Listeners() []*listener.Listener {
	ls := g.Server.Listeners(g.Proxy)
	sort.Slice(ls, func(i, j int) bool { return ls[i].Name < ls[j].Name })
	return ls
}

// StartGateway builds istiod (FakeDiscoveryServer) with the stack's Istio objects, the sample
// applications and extra objects, and the gateway proxy as istiod sees it when the gateway pod
// connects: router type, the gateway's labels and namespace, and its ProxyConfig.
func StartGateway(t test.Failer, s *RenderedStack, apps string, extra []config.Config) (*GatewayRun, error) {
	mc, pc, err := MeshAndProxyConfig(s)
	if err != nil {
		return nil, err
	}
	appConfigs, appObjects, err := sampleApps(apps, s.GatewayLabels)
	if err != nil {
		return nil, err
	}
	configs := append(append(append([]config.Config{}, s.IstioConfigs...), appConfigs...), extra...)
	kubeObjects := append([]runtime.Object{gatewayService(s)}, appObjects...)

	server := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
		Configs:           configs,
		KubernetesObjects: kubeObjects,
		MeshConfig:        mc,
	})
	gw := s.Outputs.Gateway
	proxy := server.SetupProxy(&model.Proxy{
		Type:            model.Router,
		ID:              gw.Name + "-0." + gw.Namespace,
		ConfigNamespace: gw.Namespace,
		Labels:          s.GatewayLabels,
		IPAddresses:     []string{gatewayPodIP},
		Metadata: &model.NodeMetadata{
			Namespace:    gw.Namespace,
			Labels:       s.GatewayLabels,
			ClusterID:    constants.DefaultClusterName,
			IstioVersion: istioVersion(s),
			ProxyConfig:  (*model.NodeMetaProxyConfig)(pc),
		},
	})
	return &GatewayRun{Server: server, Proxy: proxy, Stack: s}, nil
}

// istioVersion is the proxy version the gateway reports; EnvoyFilter proxyVersion matches use it.
func istioVersion(s *RenderedStack) string {
	v := strings.TrimPrefix(s.Outputs.IstioVersion, "v")
	if strings.Count(v, ".") < 1 {
		return "1.31.0"
	}
	return v
}

// gatewayService is the gateway's Kubernetes Service. istiod translates a Gateway server port
// (a Service port) to the Service's targetPort, which is the port Envoy listens on.
func gatewayService(s *RenderedStack) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: s.Outputs.Gateway.Name, Namespace: s.Outputs.Gateway.Namespace},
		Spec: corev1.ServiceSpec{
			Selector:  s.GatewayLabels,
			ClusterIP: "10.96.0.10",
			Type:      corev1.ServiceTypeClusterIP,
		},
	}
	for _, p := range s.GatewayServicePorts {
		target := p.TargetPort
		if target == 0 {
			target = p.Port
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: p.Name, Port: p.Port, TargetPort: intstr.FromInt32(target), Protocol: corev1.ProtocolTCP,
		})
	}
	return svc
}

// sampleApps parses the sample application objects: Istio configs (validated by istiod's schema)
// and Kubernetes Services. Every Gateway selects the stack's gateway by its labels.
func sampleApps(apps string, gatewayLabels map[string]string) ([]config.Config, []runtime.Object, error) {
	configs, others, err := crd.ParseInputs(apps)
	if err != nil {
		return nil, nil, fmt.Errorf("sample apps: %v", err)
	}
	for i := range configs {
		if configs[i].GroupVersionKind == gvk.Gateway {
			configs[i].Spec.(*networking.Gateway).Selector = gatewayLabels
		}
	}
	var objects []runtime.Object
	for _, o := range others {
		if o.Kind != "Service" {
			return nil, nil, fmt.Errorf("sample apps: unexpected kind %s", o.Kind)
		}
		svc, err := serviceFromIstioKind(o)
		if err != nil {
			return nil, nil, err
		}
		objects = append(objects, svc)
	}
	return configs, objects, nil
}

func serviceFromIstioKind(o crd.IstioKind) (*corev1.Service, error) {
	svc := &corev1.Service{ObjectMeta: o.ObjectMeta}
	if err := json.Unmarshal(o.Spec, &svc.Spec); err != nil {
		return nil, fmt.Errorf("sample apps: Service %s: %v", o.Name, err)
	}
	return svc, nil
}
