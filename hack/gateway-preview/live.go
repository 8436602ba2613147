package main

// The gateway's listeners from a running istiod: the preview connects over xDS as one of the
// gateway's pods, with the node identity and metadata its istio-agent (pilot-agent) would send,
// computed by the agent's own functions from the pod the API server holds, and receives the
// listeners istiod really serves. The same checks as the offline preview then run on them.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	agentconfig "istio.io/istio/pilot/cmd/pilot-agent/config"
	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/model"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pkg/bootstrap"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/config/schema/gvk"
	"istio.io/istio/pkg/config/schema/gvr"
	istioagent "istio.io/istio/pkg/istio-agent"
	kubelib "istio.io/istio/pkg/kube"
)

// LiveOptions: where istiod and the API server are, and how long to wait for istiod's answer.
type LiveOptions struct {
	XDSAddr    string // istiod's plaintext xDS port (15010)
	Kubeconfig string
	// Settle: the answer is istiod's last listener push after this long without another one.
	Settle  time.Duration
	Timeout time.Duration
}

// LiveGateway is one gateway pod's answer from istiod.
type LiveGateway struct {
	Pod       string
	NodeID    string
	Listeners []*listener.Listener
}

// FetchLive asks istiod for the listeners of every ready gateway pod of the stack, with the sample
// applications applied to the API server meanwhile (so istiod has servers to build listeners for,
// as in the offline preview) and removed afterwards.
func FetchLive(ctx context.Context, s *RenderedStack, apps string, o LiveOptions) ([]LiveGateway, error) {
	client, err := kubelib.NewClient(kubelib.BuildClientCmd(o.Kubeconfig, ""), "")
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %v", o.Kubeconfig, err)
	}
	pods, err := readyGatewayPods(ctx, client, s)
	if err != nil {
		return nil, err
	}
	type stream struct {
		pod  corev1.Pod
		node *model.Node
		ads  *adsStream
	}
	var streams []stream
	defer func() {
		for _, st := range streams {
			st.ads.close()
		}
	}()
	// Connect first, then apply the apps: istiod pushes the change to connected proxies, and the
	// last push is the answer (a connection made right after the apply could see an older push).
	for _, pod := range pods {
		node, err := agentNode(ctx, client, pod)
		if err != nil {
			return nil, fmt.Errorf("pod %s: %v", pod.Name, err)
		}
		ads, err := openADS(ctx, o.XDSAddr, node)
		if err != nil {
			return nil, fmt.Errorf("pod %s: %v", pod.Name, err)
		}
		streams = append(streams, stream{pod: pod, node: node, ads: ads})
	}
	cleanup, err := applyApps(ctx, client, s, apps)
	defer cleanup()
	if err != nil {
		return nil, err
	}
	var out []LiveGateway
	for _, st := range streams {
		ls, err := st.ads.settledListeners(o.Settle, o.Timeout)
		if err != nil {
			return nil, fmt.Errorf("pod %s: %v", st.pod.Name, err)
		}
		out = append(out, LiveGateway{Pod: st.pod.Namespace + "/" + st.pod.Name, NodeID: st.node.ID, Listeners: sortedByName(ls)})
	}
	return out, nil
}

// readyGatewayPods are the gateway's Running, Ready pods: those with the gateway's labels (the
// stack outputs' gateway.labels: the chart's, or those istiod's kube-gateway template puts on a
// Gateway API gateway's pods).
func readyGatewayPods(ctx context.Context, client kubelib.Client, s *RenderedStack) ([]corev1.Pod, error) {
	selector := s.GatewayLabels
	list, err := client.Kube().CoreV1().Pods(s.Outputs.Gateway.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: metav1.FormatLabelSelector(&metav1.LabelSelector{MatchLabels: selector}),
	})
	if err != nil {
		return nil, err
	}
	var ready []corev1.Pod
	for _, pod := range list.Items {
		if pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" {
			continue
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready = append(ready, pod)
			}
		}
	}
	if len(ready) == 0 {
		return nil, fmt.Errorf("no ready gateway pod in namespace %s with labels %v", s.Outputs.Gateway.Namespace, selector)
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].Name < ready[j].Name })
	return ready, nil
}

// agentNode is the xDS node the pod's istio-agent would send: its ProxyConfig from
// ConstructProxyConfig and its metadata from bootstrap.GetNodeMetaData (the functions pilot-agent
// itself calls), given the pod's istio-proxy environment as the kubelet resolves it and the
// downward-API files (labels, annotations) and mesh config the pod mounts, written where the agent
// reads them (paths relative to its working directory).
func agentNode(ctx context.Context, client kubelib.Client, pod corev1.Pod) (*model.Node, error) {
	var proxy *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == "istio-proxy" {
			proxy = &pod.Spec.Containers[i]
		}
	}
	if proxy == nil {
		return nil, fmt.Errorf("no istio-proxy container: the pod was not injected")
	}
	envs, err := containerEnv(pod, *proxy)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "gateway-preview-agent-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	files := map[string]string{
		constants.PodInfoLabelsPath:      downwardAPI(pod.Labels),
		constants.PodInfoAnnotationsPath: downwardAPI(pod.Annotations),
	}
	meshFile := "./etc/istio/config/mesh"
	if mesh, ok, err := mountedMeshConfig(ctx, client, pod, *proxy); err != nil {
		return nil, err
	} else if ok {
		files[meshFile] = mesh
	}
	for path, content := range files {
		full := filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	if err := os.Chdir(dir); err != nil {
		return nil, err
	}
	defer os.Chdir(cwd) //nolint:errcheck // best effort: the directory existed when we left it
	pc, err := agentconfig.ConstructProxyConfig(meshFile, "istio-proxy", envValue(envs, "PROXY_CONFIG"), 0)
	if err != nil {
		return nil, fmt.Errorf("ProxyConfig: %v", err)
	}
	id := (&istioagent.Proxy{
		Type:        model.Router,
		IPAddresses: []string{pod.Status.PodIP},
		ID:          pod.Name + "." + pod.Namespace,
		DNSDomain:   pod.Namespace + ".svc." + constants.DefaultClusterLocalDomain,
	}).ServiceNode()
	var ips []string
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	return bootstrap.GetNodeMetaData(bootstrap.MetadataOptions{
		ID:              id,
		Envs:            envs,
		InstanceIPs:     ips,
		ProxyConfig:     pc,
		EnvoyStatusPort: 15021,
	})
}

// containerEnv resolves a container's environment as the kubelet does for the values the istio
// proxy uses: literal values, pod fields and resource limits.
func containerEnv(pod corev1.Pod, c corev1.Container) ([]string, error) {
	var out []string
	for _, e := range c.Env {
		value := e.Value
		if from := e.ValueFrom; from != nil {
			switch {
			case from.FieldRef != nil:
				v, err := podField(pod, from.FieldRef.FieldPath)
				if err != nil {
					return nil, fmt.Errorf("env %s: %v", e.Name, err)
				}
				value = v
			case from.ResourceFieldRef != nil:
				q, ok := c.Resources.Limits[corev1.ResourceName(strings.TrimPrefix(from.ResourceFieldRef.Resource, "limits."))]
				if !ok {
					continue
				}
				value = fmt.Sprint(q.Value())
			default:
				continue // secrets and config maps: nothing the proxy's identity reads here
			}
		}
		out = append(out, e.Name+"="+value)
	}
	return out, nil
}

func podField(pod corev1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	}
	return "", fmt.Errorf("pod field %s is not resolved here", path)
}

func envValue(envs []string, name string) string {
	for _, e := range envs {
		if v, ok := strings.CutPrefix(e, name+"="); ok {
			return v
		}
	}
	return ""
}

// downwardAPI is the kubelet's downward-API file format: key="value" lines, sorted.
func downwardAPI(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q\n", k, m[k])
	}
	return b.String()
}

// mountedMeshConfig is the mesh config the istio-proxy container mounts at /etc/istio/config (a
// ConfigMap's "mesh" key), if it mounts one.
func mountedMeshConfig(ctx context.Context, client kubelib.Client, pod corev1.Pod, c corev1.Container) (string, bool, error) {
	for _, m := range c.VolumeMounts {
		if m.MountPath != "/etc/istio/config" {
			continue
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm, err := client.Kube().CoreV1().ConfigMaps(pod.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				return "", false, fmt.Errorf("mesh config %s: %v", v.ConfigMap.Name, err)
			}
			return cm.Data["mesh"], true, nil
		}
	}
	return "", false, nil
}

// adsStream is one ADS stream asking for listeners (LDS) and ACKing what it gets.
type adsStream struct {
	conn      *grpc.ClientConn
	cancel    context.CancelFunc
	responses chan []*listener.Listener
	errs      chan error
}

func openADS(ctx context.Context, addr string, node *model.Node) (*adsStream, error) {
	meta, err := nodeMetadataStruct(node)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return nil, fmt.Errorf("istiod %s: %v", addr, err)
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		cancel()
		conn.Close()
		return nil, fmt.Errorf("istiod %s: %v", addr, err)
	}
	xdsNode := &core.Node{Id: node.ID, Metadata: meta}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: xdsNode, TypeUrl: v3.ListenerType}); err != nil {
		cancel()
		conn.Close()
		return nil, fmt.Errorf("istiod %s: %v", addr, err)
	}
	a := &adsStream{conn: conn, cancel: cancel, responses: make(chan []*listener.Listener, 16), errs: make(chan error, 1)}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				a.errs <- err
				return
			}
			var ls []*listener.Listener
			for _, r := range resp.Resources {
				l := &listener.Listener{}
				if err := r.UnmarshalTo(l); err != nil {
					a.errs <- fmt.Errorf("listener: %v", err)
					return
				}
				ls = append(ls, l)
			}
			ack := &discovery.DiscoveryRequest{TypeUrl: resp.TypeUrl, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}
			if err := stream.Send(ack); err != nil {
				a.errs <- err
				return
			}
			a.responses <- ls
		}
	}()
	return a, nil
}

// settledListeners waits for istiod's pushes and returns the last one after settle passed without
// another; an error if none came within timeout.
func (a *adsStream) settledListeners(settle, timeout time.Duration) ([]*listener.Listener, error) {
	deadline := time.After(timeout)
	var last []*listener.Listener
	got := false
	quiet := time.NewTimer(timeout)
	defer quiet.Stop()
	for {
		select {
		case ls := <-a.responses:
			last, got = ls, true
			quiet.Reset(settle)
		case <-quiet.C:
			if got {
				return last, nil
			}
		case err := <-a.errs:
			return nil, fmt.Errorf("xDS stream: %v", err)
		case <-deadline:
			if got {
				return nil, fmt.Errorf("istiod kept pushing listeners for %s (no %s pause)", timeout, settle)
			}
			return nil, fmt.Errorf("no listeners from istiod within %s", timeout)
		}
	}
}

func (a *adsStream) close() {
	a.cancel()
	a.conn.Close()
}

// nodeMetadataStruct is the node metadata as Envoy's bootstrap carries it (the bootstrap's
// meta_json_str: the typed metadata, plus the raw ISTIO_META_* values it has no field for).
func nodeMetadataStruct(node *model.Node) (*structpb.Struct, error) {
	raw, err := json.Marshal(node.Metadata)
	if err != nil {
		return nil, err
	}
	merged := map[string]any{}
	if err := json.Unmarshal(raw, &merged); err != nil {
		return nil, err
	}
	for k, v := range node.RawMetadata {
		if _, typed := merged[k]; !typed {
			merged[k] = v
		}
	}
	return structpb.NewStruct(merged)
}

// applyApps puts the sample applications into the API server (namespaces created as needed) and
// returns what removes exactly what it created.
func applyApps(ctx context.Context, client kubelib.Client, s *RenderedStack, apps string) (func(), error) {
	var undo []func()
	cleanup := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	bg := context.Background() // the cleanup runs even when ctx is done
	// A namespace is deleted asynchronously (the namespace controller empties it first): a new
	// namespace waits for a terminating one of its name, and the cleanup waits until it is gone,
	// so the next run and an emptiness check after it both see it gone.
	namespaces := client.Kube().CoreV1().Namespaces()
	awaitGone := func(c context.Context, ns string) error {
		for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
			if _, err := namespaces.Get(c, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				return nil
			}
		}
		return fmt.Errorf("namespace %s still terminating after 2m", ns)
	}
	// The routes file's Namespaces carry labels a Gateway's allowedRoutes selector may ask for:
	// every namespace the apps use is made with them.
	var routes []*unstructured.Unstructured
	namespaceLabels := map[string]map[string]string{}
	if s.UsesGatewayAPI() {
		for _, doc := range strings.Split(gatewayAPIRoutes(s), "\n---\n") {
			var m map[string]any
			if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
				return cleanup, err
			}
			if len(m) == 0 {
				continue
			}
			u := &unstructured.Unstructured{Object: m}
			if u.GetKind() == "Namespace" {
				namespaceLabels[u.GetName()] = u.GetLabels()
			} else {
				routes = append(routes, u)
			}
		}
	}
	ensureNamespace := func(ns string) error {
		if existing, err := namespaces.Get(ctx, ns, metav1.GetOptions{}); err == nil && existing.Status.Phase == corev1.NamespaceTerminating {
			if err := awaitGone(ctx, ns); err != nil {
				return err
			}
		}
		_, err := namespaces.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: namespaceLabels[ns]}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		if err == nil {
			undo = append(undo, func() {
				if namespaces.Delete(bg, ns, metav1.DeleteOptions{}) == nil {
					if err := awaitGone(bg, ns); err != nil {
						fmt.Fprintln(os.Stderr, "gateway-preview: cleanup:", err)
					}
				}
			})
		}
		return err
	}
	create := func(resource schema.GroupVersionResource, obj map[string]any) error {
		u := &unstructured.Unstructured{Object: obj}
		resources := func() dynamic.ResourceInterface {
			if u.GetNamespace() == "" {
				return client.Dynamic().Resource(resource)
			}
			return client.Dynamic().Resource(resource).Namespace(u.GetNamespace())
		}()
		if u.GetNamespace() != "" {
			if err := ensureNamespace(u.GetNamespace()); err != nil {
				return err
			}
		}
		_, err := resources.Create(ctx, u, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil // someone else's (a GatewayClass istiod made): left alone
		}
		if err != nil {
			return fmt.Errorf("%s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		name := u.GetName()
		undo = append(undo, func() { _ = resources.Delete(bg, name, metav1.DeleteOptions{}) })
		return nil
	}
	configs, services, err := sampleApps(apps, s)
	if err != nil {
		return cleanup, err
	}
	for _, c := range configs {
		obj, err := crd.ConvertConfig(c)
		if err != nil {
			return cleanup, err
		}
		m, err := toMap(obj)
		if err != nil {
			return cleanup, err
		}
		if err := create(gvk.MustToGVR(c.GroupVersionKind), m); err != nil {
			return cleanup, err
		}
	}
	for _, o := range services {
		m, err := toMap(o)
		if err != nil {
			return cleanup, err
		}
		m["apiVersion"], m["kind"] = "v1", "Service"
		if err := create(gvr.Service, m); err != nil {
			return cleanup, err
		}
	}
	for _, u := range routes {
		resource, ok := gvk.ToGVR(gvkOf(u))
		if !ok {
			return cleanup, fmt.Errorf("gateway API route: unknown kind %s", u.GetKind())
		}
		if err := create(resource, u.Object); err != nil {
			return cleanup, err
		}
	}
	return cleanup, nil
}

func gvkOf(u *unstructured.Unstructured) config.GroupVersionKind {
	k := u.GroupVersionKind()
	return config.GroupVersionKind{Group: k.Group, Version: k.Version, Kind: k.Kind}
}

func toMap(o any) (map[string]any, error) {
	raw, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	return m, json.Unmarshal(raw, &m)
}
