package main

// Building the ingress gateway's listeners with istiod's own config generator, in-process.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
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
	"istio.io/istio/pkg/config/schema/gvr"
	kubelib "istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/kube/kclient/clienttest"
	"istio.io/istio/pkg/test"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gatewayapiconsts "sigs.k8s.io/gateway-api/pkg/consts"
	"time"
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
	return sortedByName(g.Server.Listeners(g.Proxy))
}

// sortedByName orders listeners by name, as the summary and the comparisons read them.
func sortedByName(ls []*listener.Listener) []*listener.Listener {
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
	appConfigs, appObjects, err := sampleApps(apps, s)
	if err != nil {
		return nil, err
	}
	configs := append(append(append([]config.Config{}, s.IstioConfigs...), appConfigs...), extra...)
	kubeObjects := append([]runtime.Object{gatewayService(s)}, appObjects...)
	if s.UsesGatewayAPI() {
		// The Gateway and the routes go to the fake cluster, where istiod's Gateway API controller
		// (pilot/pkg/config/kube/gateway) reads and compiles them, as in production.
		gatewayAPI, err := gatewayAPIObjects(s)
		if err != nil {
			return nil, err
		}
		kubeObjects = append(kubeObjects, gatewayAPI...)
	}

	if s.HTTPSTerminates {
		secrets, err := certificateSecrets(s)
		if err != nil {
			return nil, err
		}
		kubeObjects = append(kubeObjects, secrets...)
	}

	server := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
		Configs:           configs,
		KubernetesObjects: kubeObjects,
		MeshConfig:        mc,
	})
	if s.UsesGatewayAPI() {
		if err := awaitGatewayAPIRoutes(t, server, s.HTTPSTerminates); err != nil {
			return nil, err
		}
	}
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

// awaitGatewayAPIRoutes marks the fake cluster's Gateway API CRDs with the bundle version, as the
// real CRDs carry it: istiod ignores a Gateway API CRD without it (kclient crdwatcher.go
// minimumVersionFilter), and never starts the TLSRoute informer. It then waits until istiod has
// compiled the routes into VirtualServices: the HTTPRoute on http and, on https, the TLSRoute
// (passthrough) or the HTTPRoute (terminated).
func awaitGatewayAPIRoutes(t test.Failer, server *xds.FakeDiscoveryServer, httpsTerminates bool) error {
	for _, resource := range []schema.GroupVersionResource{gvr.GatewayClass, gvr.KubernetesGateway, gvr.HTTPRoute, gvr.TLSRoute, gvr.ReferenceGrant} {
		clienttest.MakeCRDWithAnnotations(t, server.KubeClient(), resource, map[string]string{
			gatewayapiconsts.BundleVersionAnnotation: gatewayapiconsts.BundleVersion,
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		tls, http, httpOnHTTPS := false, false, false
		for _, vs := range server.Env().ConfigStore.List(gvk.VirtualService, "") {
			spec := vs.Spec.(*networking.VirtualService)
			if strings.Contains(vs.Name, "istio-autogenerated-k8s-gateway") {
				tls = tls || len(spec.Tls) > 0
				http = http || len(spec.Http) > 0
				// istiod merges the HTTP routes of one listener and hostname into one VirtualService
				// bound to the listener's internal Gateway <gateway>~istio-autogenerated-k8s-gateway~<listener>.
				for _, g := range spec.Gateways {
					httpOnHTTPS = httpOnHTTPS || (len(spec.Http) > 0 && strings.HasSuffix(g, "~https"))
				}
			}
		}
		if http && ((!httpsTerminates && tls) || (httpsTerminates && httpOnHTTPS)) {
			server.Discovery.ConfigUpdate(&model.PushRequest{Forced: true, Reason: model.NewReasonStats(model.ConfigUpdate)})
			time.Sleep(200 * time.Millisecond)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if httpsTerminates {
		var seen []string
		for _, vs := range server.Env().ConfigStore.List(gvk.VirtualService, "") {
			spec := vs.Spec.(*networking.VirtualService)
			seen = append(seen, fmt.Sprintf("%s %v http=%d", vs.Name, spec.Gateways, len(spec.Http)))
		}
		return fmt.Errorf("istiod did not compile the sample apps' HTTPRoutes on both http and https within 10s; VirtualServices: %v", seen)
	}
	return fmt.Errorf("istiod compiled no HTTPRoute and TLSRoute of the sample apps within 10s")
}

// certificateSecrets are the TLS Secrets a terminating https listener names, each with a
// throwaway self-signed certificate for *.example.com made here: istiod's Gateway API controller
// refuses a certificateRef whose Secret is missing or holds no valid key pair (conversion.go
// buildSecretReference), and then builds no HTTPS server. Nothing is committed: a fresh key per run.
func certificateSecrets(s *RenderedStack) ([]runtime.Object, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "*.example.com"},
		DNSNames:     []string{"*.example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	var out []runtime.Object
	for _, name := range s.CertificateSecrets {
		out = append(out, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Outputs.Gateway.Namespace},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
		})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the https listener terminates TLS but names no certificate Secret")
	}
	return out, nil
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
	name := s.Outputs.Gateway.Name
	if s.Outputs.Gateway.Service.Name != "" {
		name = s.Outputs.Gateway.Service.Name // the generated <gateway>-istio of a Gateway API gateway
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Outputs.Gateway.Namespace},
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

// gatewayAPIObjects decodes the stack's Gateway API objects and the routes applications attach to
// its Gateway (apps/gateway-api-routes.yaml, with the GatewayClass istiod would create).
func gatewayAPIObjects(s *RenderedStack) ([]runtime.Object, error) {
	docs := append(append([]string{}, s.GatewayAPIObjects...), strings.Split(gatewayAPIRoutes(s), "\n---\n")...)
	var objects []runtime.Object
	for _, doc := range docs {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		o, _, err := kubelib.IstioCodec.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			return nil, fmt.Errorf("gateway API object: %v", err)
		}
		objects = append(objects, o)
	}
	return objects, nil
}

// gatewayAPIRoutes are the routes applications attach to the stack's Gateway
// (apps/gateway-api-routes.yaml, named for this stack).
func gatewayAPIRoutes(s *RenderedStack) string {
	return strings.NewReplacer("GATEWAY_NAMESPACE", s.Outputs.Gateway.Namespace, "GATEWAY_NAME", s.Outputs.Gateway.Name).
		Replace(gatewayAPIRoutesYAML)
}

// sampleApps parses the sample application objects: Istio configs (validated by istiod's schema)
// and Kubernetes Services. Every Gateway selects the stack's gateway by its labels. For a Gateway
// API stack only their servers on ports HAProxy does not send to stay: the Gateway API routes
// serve HAProxy's ports.
func sampleApps(apps string, s *RenderedStack) ([]config.Config, []runtime.Object, error) {
	configs, others, err := crd.ParseInputs(apps)
	if err != nil {
		return nil, nil, fmt.Errorf("sample apps: %v", err)
	}
	servicePorts := map[uint32]bool{}
	for _, p := range s.GatewayServicePorts {
		servicePorts[uint32(p.Port)] = true
	}
	for i := range configs {
		if configs[i].GroupVersionKind == gvk.Gateway {
			gw := configs[i].Spec.(*networking.Gateway)
			gw.Selector = s.GatewayLabels
			if s.UsesGatewayAPI() {
				// Istio merges a classic Gateway into a Gateway API gateway's pods only from the
				// Gateway's own namespace (PILOT_ENABLE_STRICT_GATEWAY_MERGING, on by default).
				configs[i].Namespace = s.Outputs.Gateway.Namespace
				var kept []*networking.Server
				for _, server := range gw.Servers {
					if !servicePorts[server.Port.Number] {
						kept = append(kept, server)
					}
				}
				gw.Servers = kept
			}
		}
	}
	for i := range configs {
		if configs[i].GroupVersionKind == gvk.VirtualService && s.UsesGatewayAPI() {
			vs := configs[i].Spec.(*networking.VirtualService)
			for j, ref := range vs.Gateways {
				if !strings.Contains(ref, "/") {
					vs.Gateways[j] = s.Outputs.Gateway.Namespace + "/" + ref
				}
			}
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
