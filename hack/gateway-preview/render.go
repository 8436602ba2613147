package main

// Reading one stack's render directory (python -m components.render --stack NAME --out DIR):
//   DIR/outputs.json            the stack outputs
//   DIR/kubernetes/*.yaml       one Kubernetes object per file
//   DIR/kubernetes/helm/*.yaml  one Helm release per file (chart, version, repository, namespace, values)

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pkg/config"
)

// StackOutputs is the part of outputs.json the preview needs.
type StackOutputs struct {
	Frontends []struct {
		Name        string `json:"name"`
		GatewayPort string `json:"gatewayPort"`
		TargetPort  int    `json:"targetPort"`
	} `json:"frontends"`
	ProxyProtocol struct {
		Mode   string `json:"mode"`
		Strict bool   `json:"strict"`
	} `json:"proxyProtocol"`
	NumTrustedProxies uint32 `json:"numTrustedProxies"`
	Gateway           struct {
		Namespace string            `json:"namespace"`
		Name      string            `json:"name"`
		Labels    map[string]string `json:"labels"`
		// Managed: installed by this program (istio.install), not adopted.
		Managed bool `json:"managed"`
		// API: "istio" (the gateway chart) or "gateway-api" (a Gateway istiod deploys).
		API     string `json:"api"`
		Service struct {
			Name string `json:"name"`
		} `json:"service"`
	} `json:"gateway"`
	IstioVersion string `json:"istioVersion"`
}

// HelmRelease is one file under kubernetes/helm/.
type HelmRelease struct {
	Chart     string         `json:"chart"`
	Version   string         `json:"version"`
	Namespace string         `json:"namespace"`
	Values    map[string]any `json:"values"`
}

// ServicePort is one port of the gateway's Kubernetes Service.
type ServicePort struct {
	Name       string `json:"name"`
	Port       int32  `json:"port"`
	TargetPort int32  `json:"targetPort"`
}

// RenderedStack is everything the preview takes from one render directory.
type RenderedStack struct {
	Dir     string
	Outputs StackOutputs
	// IstioConfigs are the Istio objects (EnvoyFilter, AuthorizationPolicy), parsed and validated
	// with istiod's own schema validation, as the admission webhook would.
	IstioConfigs []config.Config
	// MeshConfigYAML is the istiod release's values.meshConfig ("" when Istio is adopted).
	MeshConfigYAML string
	// ProxyConfigAnnotation is the gateway pods' proxy.istio.io/config annotation, if any.
	ProxyConfigAnnotation string
	// GatewayServicePorts are the gateway Service's ports (from the gateway release's values).
	GatewayServicePorts []ServicePort
	// GatewayLabels are the labels the gateway pods carry.
	GatewayLabels map[string]string
	// GatewayAPIObjects are the rendered Gateway API objects (gateway.api: gateway-api), YAML
	// documents for the fake cluster, where istiod's Gateway API controller reads them.
	GatewayAPIObjects []string
	// HTTPSTerminates: the Gateway's https listener terminates TLS (gateway.httpsTls.mode:
	// Terminate) with the Secrets CertificateSecrets names, in the Gateway's namespace.
	HTTPSTerminates    bool
	CertificateSecrets []string
}

// UsesGatewayAPI: the gateway is a Gateway API Gateway that istiod deploys itself.
func (s *RenderedStack) UsesGatewayAPI() bool { return s.Outputs.Gateway.API == "gateway-api" }

// HAProxyListenerPorts are the gateway's Envoy listener ports HAProxy sends to.
func (s *RenderedStack) HAProxyListenerPorts() map[uint32]string {
	ports := map[uint32]string{}
	for _, f := range s.Outputs.Frontends {
		ports[uint32(f.TargetPort)] = f.Name
	}
	return ports
}

const proxyConfigAnnotation = "proxy.istio.io/config"

// defaultGatewayServicePorts is what an adopted gateway's Service is assumed to have: the
// current Istio gateway chart's ports. Our render has no Service for an adopted gateway.
func defaultGatewayServicePorts(outputs StackOutputs) []ServicePort {
	servicePort := map[string]int32{"http": 80, "https": 443}
	ports := []ServicePort{{Name: "status-port", Port: 15021, TargetPort: 15021}}
	for _, f := range outputs.Frontends {
		p, ok := servicePort[f.GatewayPort]
		if !ok {
			continue
		}
		ports = append(ports, ServicePort{Name: f.GatewayPort, Port: p, TargetPort: int32(f.TargetPort)})
	}
	return ports
}

// LoadRenderedStack reads a render directory.
func LoadRenderedStack(dir string) (*RenderedStack, error) {
	s := &RenderedStack{Dir: dir}
	raw, err := os.ReadFile(filepath.Join(dir, "outputs.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, &s.Outputs); err != nil {
		return nil, fmt.Errorf("%s/outputs.json: %v", dir, err)
	}
	s.GatewayLabels = map[string]string{}
	for k, v := range s.Outputs.Gateway.Labels {
		s.GatewayLabels[k] = v
	}

	objectFiles, err := filepath.Glob(filepath.Join(dir, "kubernetes", "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(objectFiles)
	var istioDocs []string
	for _, file := range objectFiles {
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
			Spec struct {
				Template struct {
					Metadata struct {
						Annotations map[string]string `json:"annotations"`
					} `json:"metadata"`
				} `json:"template"`
				Infrastructure struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"infrastructure"`
				Listeners []struct {
					Name string `json:"name"`
					Port int32  `json:"port"`
					TLS  struct {
						Mode            string `json:"mode"`
						CertificateRefs []struct {
							Name string `json:"name"`
						} `json:"certificateRefs"`
					} `json:"tls"`
				} `json:"listeners"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(raw, &head); err != nil {
			return nil, fmt.Errorf("%s: %v", file, err)
		}
		switch {
		case strings.Contains(head.APIVersion, "istio.io/"):
			istioDocs = append(istioDocs, string(raw))
		case strings.HasPrefix(head.APIVersion, "gateway.networking.k8s.io/"):
			s.GatewayAPIObjects = append(s.GatewayAPIObjects, string(raw))
			if head.Kind == "Gateway" && head.Metadata.Name == s.Outputs.Gateway.Name {
				// istiod's deployment controller copies spec.infrastructure.annotations onto the
				// pods it generates (kube-gateway template), so this is the pods' ProxyConfig.
				if pc, ok := head.Spec.Infrastructure.Annotations[proxyConfigAnnotation]; ok {
					s.ProxyConfigAnnotation = pc
				}
				// The generated Service: the status port, then one port per listener, with no
				// targetPort (Envoy listens on the listener's port).
				s.GatewayServicePorts = []ServicePort{{Name: "status-port", Port: 15021, TargetPort: 15021}}
				for _, l := range head.Spec.Listeners {
					s.GatewayServicePorts = append(s.GatewayServicePorts, ServicePort{Name: l.Name, Port: l.Port, TargetPort: l.Port})
					if l.Name == "https" && l.TLS.Mode == "Terminate" {
						s.HTTPSTerminates = true
						for _, ref := range l.TLS.CertificateRefs {
							s.CertificateSecrets = append(s.CertificateSecrets, ref.Name)
						}
					}
				}
			}
		case head.Kind == "Deployment" && head.Metadata.Name == s.Outputs.Gateway.Name &&
			head.Metadata.Namespace == s.Outputs.Gateway.Namespace:
			// The patch of an adopted gateway: its pod template carries our ProxyConfig.
			if pc, ok := head.Spec.Template.Metadata.Annotations[proxyConfigAnnotation]; ok {
				s.ProxyConfigAnnotation = pc
			}
		}
	}
	if len(istioDocs) > 0 {
		// istiod's own parser and validation (the same the admission webhook runs).
		configs, unknown, err := crd.ParseInputs(strings.Join(istioDocs, "\n---\n"))
		if err != nil {
			return nil, fmt.Errorf("%s/kubernetes: %v", dir, err)
		}
		if len(unknown) > 0 {
			return nil, fmt.Errorf("%s/kubernetes: kinds istiod does not know: %v", dir, unknown[0].Kind)
		}
		s.IstioConfigs = configs
	}

	releaseFiles, err := filepath.Glob(filepath.Join(dir, "kubernetes", "helm", "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(releaseFiles)
	for _, file := range releaseFiles {
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		var rel HelmRelease
		if err := yaml.Unmarshal(raw, &rel); err != nil {
			return nil, fmt.Errorf("%s: %v", file, err)
		}
		if err := s.applyRelease(rel); err != nil {
			return nil, fmt.Errorf("%s: %v", file, err)
		}
	}
	if s.GatewayServicePorts == nil {
		s.GatewayServicePorts = defaultGatewayServicePorts(s.Outputs)
	}
	return s, nil
}

func (s *RenderedStack) applyRelease(rel HelmRelease) error {
	switch rel.Chart {
	case "istiod":
		if mc, ok := rel.Values["meshConfig"]; ok {
			out, err := yaml.Marshal(mc)
			if err != nil {
				return err
			}
			s.MeshConfigYAML = string(out)
		}
	case "gateway":
		var values struct {
			Labels         map[string]string `json:"labels"`
			PodAnnotations map[string]string `json:"podAnnotations"`
			Service        struct {
				Ports []ServicePort `json:"ports"`
			} `json:"service"`
		}
		raw, err := json.Marshal(rel.Values)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &values); err != nil {
			return fmt.Errorf("gateway values: %v", err)
		}
		for k, v := range values.Labels {
			s.GatewayLabels[k] = v
		}
		if pc, ok := values.PodAnnotations[proxyConfigAnnotation]; ok {
			s.ProxyConfigAnnotation = pc
		}
		if len(values.Service.Ports) > 0 {
			s.GatewayServicePorts = values.Service.Ports
		}
	}
	return nil
}

// StackAccess is the access section of a Pulumi stack file (source-ip-edge:access): the client
// CIDRs the user asked to allow and deny, and the only direct peers (HAProxy) the listeners HAProxy
// sends to may accept: the expectations the RBAC checks hold the listeners to.
type StackAccess struct {
	Allow        []string `json:"allow"`
	Deny         []string `json:"deny"`
	TrustedPeers []string `json:"trustedPeers"`
}

// LoadStackAccess reads source-ip-edge:access from a Pulumi.<stack>.yaml.
func LoadStackAccess(stackFile string) (StackAccess, error) {
	var file struct {
		Config map[string]json.RawMessage `json:"config"`
	}
	raw, err := os.ReadFile(stackFile)
	if err != nil {
		return StackAccess{}, err
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		return StackAccess{}, fmt.Errorf("%s: %v", stackFile, err)
	}
	var access StackAccess
	if section, ok := file.Config["source-ip-edge:access"]; ok {
		if err := json.Unmarshal(section, &access); err != nil {
			return StackAccess{}, fmt.Errorf("%s: source-ip-edge:access: %v", stackFile, err)
		}
	}
	return access, nil
}
