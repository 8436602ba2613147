package main

// Tests on the listeners istiod generates for each rendered stack. The render directories come
// from `make gateway-test` (GATEWAY_PREVIEW_RENDERS=DIR, one sub-directory per stack, and
// GATEWAY_PREVIEW_STACK_FILES=DIR:DIR, where Pulumi.<stack>.yaml files are found).

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetwork "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	networking "istio.io/api/networking/v1alpha3"
	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/simulation"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/schema/gvk"
)

func TestMain(m *testing.M) {
	quietIstioLogs()
	os.Exit(m.Run())
}

// renderedStack is one stack's render and the expectations from its stack file.
type renderedStack struct {
	name   string
	stack  *RenderedStack
	expect Expectations
}

func loadRenders(t *testing.T) []renderedStack {
	t.Helper()
	root := os.Getenv("GATEWAY_PREVIEW_RENDERS")
	if root == "" {
		t.Fatal("GATEWAY_PREVIEW_RENDERS is not set: run `make gateway-test`, which renders the stacks first")
	}
	dirs, err := filepath.Glob(filepath.Join(root, "*", "outputs.json"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no rendered stacks under %s", root)
	}
	sort.Strings(dirs)
	var out []renderedStack
	for _, outputs := range dirs {
		dir := filepath.Dir(outputs)
		name := filepath.Base(dir)
		s, err := LoadRenderedStack(dir)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		access, err := LoadStackAccess(findStackFile(t, name))
		if err != nil {
			t.Fatal(err)
		}
		e, err := ExpectationsFor(s, access)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, renderedStack{name: name, stack: s, expect: e})
	}
	return out
}

func findStackFile(t *testing.T, stack string) string {
	t.Helper()
	for _, dir := range filepath.SplitList(os.Getenv("GATEWAY_PREVIEW_STACK_FILES")) {
		path := filepath.Join(dir, "Pulumi."+stack+".yaml")
		if _, err := os.Stat(path); err == nil {
			return path
		}
	}
	t.Fatalf("no Pulumi.%s.yaml in GATEWAY_PREVIEW_STACK_FILES=%q", stack, os.Getenv("GATEWAY_PREVIEW_STACK_FILES"))
	return ""
}

// gateway starts istiod for a stack and returns the gateway's listeners.
func gateway(t *testing.T, s *RenderedStack, extra ...config.Config) (*GatewayRun, []*listener.Listener) {
	t.Helper()
	gw, err := StartGateway(t, s, sampleAppsYAML, extra)
	if err != nil {
		t.Fatal(err)
	}
	return gw, gw.Listeners()
}

func expectNoProblems(t *testing.T, what string, problems []string) {
	t.Helper()
	for _, p := range problems {
		t.Errorf("%s: %s", what, p)
	}
}

// TestRendersCoverEveryMode keeps the suite honest: each proxy-protocol mode and strictness, both
// an installed and an adopted Istio, and the trusted-peer lock in each mode are among the rendered
// stacks.
func TestRendersCoverEveryMode(t *testing.T) {
	want := map[string]bool{
		"envoyfilter strict": false, "envoyfilter lenient": false, "native strict": false, "adopted": false, "installed": false,
		"trusted peers envoyfilter": false, "trusted peers native": false,
		"gateway-api envoyfilter": false, "gateway-api native": false,
		"gateway-api https passthrough": false, "gateway-api https terminated": false,
	}
	for _, r := range loadRenders(t) {
		pp := r.stack.Outputs.ProxyProtocol
		key := pp.Mode + " strict"
		if !pp.Strict {
			key = pp.Mode + " lenient"
		}
		want[key] = true
		if len(r.expect.TrustedPeers) > 0 {
			want["trusted peers "+pp.Mode] = true
		}
		if r.stack.UsesGatewayAPI() {
			want["gateway-api "+pp.Mode] = true
			if r.stack.HTTPSTerminates {
				want["gateway-api https terminated"] = true
			} else {
				want["gateway-api https passthrough"] = true
			}
		}
		if r.stack.Outputs.Gateway.Managed {
			want["installed"] = true
		} else {
			want["adopted"] = true
		}
	}
	for k, covered := range want {
		if !covered {
			t.Errorf("no rendered stack covers %s", k)
		}
	}
}

// TestGatewayListeners runs the checks on each stack's generated listeners.
func TestGatewayListeners(t *testing.T) {
	for _, r := range loadRenders(t) {
		t.Run(r.name, func(t *testing.T) {
			gw, ls := gateway(t, r.stack)
			t.Run("haproxy_listeners_parse_proxy_protocol_first", func(t *testing.T) {
				expectNoProblems(t, "listener filters", CheckListenerFilters(ls, r.expect))
			})
			t.Run("listeners_not_fronted_by_haproxy_untouched_unless_native", func(t *testing.T) {
				var other *listener.Listener
				for _, l := range ls {
					if _, fronted := r.expect.HAProxyPorts[listenerPort(l)]; !fronted {
						other = l
					}
				}
				if other == nil {
					t.Fatal("the sample apps should give the gateway a listener HAProxy does not send to")
				}
				names := listenerFilterNames(other)
				hasPROXY := len(names) > 0 && names[0] == proxyProtocolFilter
				if hasPROXY != r.expect.Native {
					t.Errorf("%s: listener filters %v; want proxy_protocol only in native mode (native: %v)", other.Name, names, r.expect.Native)
				}
			})
			t.Run("https_sni_chain_matches_tls_client", func(t *testing.T) {
				checkSNIChains(t, gw, ls, r.expect)
			})
			t.Run("every_hcm_uses_remote_address_and_configured_trusted_hops", func(t *testing.T) {
				expectNoProblems(t, "xff", CheckXFF(ls, r.expect))
			})
			t.Run("rbac_enforces_client_cidrs_on_remote_ip", func(t *testing.T) {
				// With no allow or deny list this checks that no listener got remote_ip rules.
				expectNoProblems(t, "rbac", CheckRBAC(ls, r.expect))
			})
			t.Run("trusted_peer_lock_only_on_haproxy_listeners", func(t *testing.T) {
				expectNoProblems(t, "trusted-peer lock", CheckTrustedPeerLock(ls, r.expect))
				// The listener HAProxy does not send to keeps its RBAC free of the lock in every
				// mode (with the native field it parses PROXY too, but the Service does not expose
				// it); without access.trustedPeers no listener has a lock at all.
				others := 0
				for _, l := range ls {
					_, fronted := r.expect.HAProxyPorts[listenerPort(l)]
					if !fronted {
						others++
					}
					for _, fc := range l.FilterChains {
						rules, err := chainRBAC(fc)
						if err != nil {
							t.Fatal(err)
						}
						for _, rule := range rules {
							peers := directPeersOf(rule)
							if len(r.expect.TrustedPeers) == 0 && len(peers.negated) > 0 {
								t.Errorf("%s/%s: no access.trustedPeers, but a %s rule refuses direct peers outside %v", l.Name, fc.Name, rule.Action, peers.negated)
							}
							for _, p := range r.expect.TrustedPeers {
								if !fronted && (peers.negated[p] || peers.positive[p]) {
									t.Errorf("%s/%s (not fronted by HAProxy): %s rule names trusted peer %s", l.Name, fc.Name, rule.Action, p)
								}
							}
						}
					}
				}
				if others == 0 {
					t.Fatal("the sample apps should give the gateway a listener HAProxy does not send to")
				}
			})
			t.Run("listeners_json_uses_proto_field_names", func(t *testing.T) {
				raw, err := ListenersJSON(ls)
				if err != nil {
					t.Fatal(err)
				}
				for _, want := range []string{`"listener_filters"`, `"use_remote_address"`} {
					if !strings.Contains(string(raw), want) {
						t.Errorf("listeners JSON has no %s", want)
					}
				}
			})
		})
	}
}

// checkSNIChains runs Istio's traffic simulation against the HTTPS listener: a TLS client naming
// the terminated host, and one naming the passthrough host, each reach their own filter chain and
// route. The SNI the chains match on is read by tls_inspector, which must run after the PROXY
// header is stripped on a listener HAProxy sends to.
func checkSNIChains(t *testing.T, gw *GatewayRun, ls []*listener.Listener, e Expectations) {
	httpsPort := uint32(0)
	for _, f := range gw.Stack.Outputs.Frontends {
		if f.GatewayPort == "https" {
			httpsPort = uint32(f.TargetPort)
		}
	}
	if httpsPort == 0 {
		t.Fatal("no https frontend in the stack outputs")
	}
	sim := simulation.NewSimulation(t, gw.Server, gw.Proxy)
	calls := []struct {
		name    string
		call    simulation.Call
		cluster string
	}{
		{
			name:    "terminated",
			call:    simulation.Call{Port: int(httpsPort), Protocol: simulation.HTTP, TLS: simulation.TLS, HostHeader: "shop.example.com", CallMode: simulation.CallModeGateway},
			cluster: "outbound|8080||web.shop.svc.cluster.local",
		},
		{
			name:    "passthrough",
			call:    simulation.Call{Port: int(httpsPort), Protocol: simulation.TCP, TLS: simulation.TLS, Sni: "db.example.com", CallMode: simulation.CallModeGateway},
			cluster: "outbound|5433||db.shop.svc.cluster.local",
		},
	}
	for _, c := range calls {
		if gw.Stack.UsesGatewayAPI() && (c.name == "terminated") != gw.Stack.HTTPSTerminates {
			// A Gateway API https listener either passes TLS through (TLSRoute by SNI) or
			// terminates it (HTTPRoute): one of the two calls applies.
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			result := sim.Run(c.call)
			if result.Error != nil {
				t.Fatalf("SNI %s on port %d: %v", c.call.Sni+c.call.HostHeader, httpsPort, result.Error)
			}
			if result.ClusterMatched != c.cluster {
				t.Errorf("SNI %s reached cluster %q via chain %q, want %q", c.call.Sni+c.call.HostHeader, result.ClusterMatched, result.FilterChainMatched, c.cluster)
			}
			l := listenerByName(ls, result.ListenerMatched)
			names := listenerFilterNames(l)
			tlsAt, ppAt := indexOf(names, tlsInspectorFilter), indexOf(names, proxyProtocolFilter)
			if tlsAt < 0 {
				t.Fatalf("%s has no tls_inspector, so no SNI: %v", l.Name, names)
			}
			if ppAt < 0 || tlsAt < ppAt {
				t.Errorf("%s: tls_inspector runs before the PROXY header is stripped: %v", l.Name, names)
			}
		})
	}
}

func listenerByName(ls []*listener.Listener, name string) *listener.Listener {
	for _, l := range ls {
		if l.Name == name {
			return l
		}
	}
	return nil
}

// blogEnvoyFilter is the widely copied EnvoyFilter: applyTo LISTENER, MERGE of listener_filters
// [proxy_protocol, tls_inspector]. Protobuf merge appends to the listener's own filters, so on a
// listener where Istio already put tls_inspector for SNI, tls_inspector comes first.
func blogEnvoyFilter(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "blog-envoyfilter.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// strictEnvoyFilterStack is the first rendered stack in strict EnvoyFilter mode, the base the
// negative tests alter.
func strictEnvoyFilterStack(t *testing.T) *renderedStack {
	t.Helper()
	for _, r := range loadRenders(t) {
		if r.stack.Outputs.ProxyProtocol.Mode == "envoyfilter" && r.stack.Outputs.ProxyProtocol.Strict {
			return &r
		}
	}
	t.Fatal("no strict envoyfilter stack rendered")
	return nil
}

// TestBlogEnvoyFilterPutsTLSInspectorFirst proves the checks can fail: the dev stack with its
// EnvoyFilter replaced by the blog's, on gateway pods without Istio's native parser (the setup the
// blog is written for), is caught by the same listener-filter check.
func TestBlogEnvoyFilterPutsTLSInspectorFirst(t *testing.T) {
	base := strictEnvoyFilterStack(t)
	stack := *base.stack
	stack.MeshConfigYAML = ""
	stack.ProxyConfigAnnotation = fmt.Sprintf(`{"gatewayTopology": {"numTrustedProxies": %d}}`, base.expect.TrustedHops)
	stack.IstioConfigs = nil
	for _, c := range base.stack.IstioConfigs {
		if c.GroupVersionKind != gvk.EnvoyFilter {
			stack.IstioConfigs = append(stack.IstioConfigs, c)
		}
	}
	wrong, _, err := crd.ParseInputs(blogEnvoyFilter(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range wrong {
		wrong[i].Namespace = stack.Outputs.Gateway.Namespace
		wrong[i].Spec.(*networking.EnvoyFilter).WorkloadSelector.Labels = stack.GatewayLabels
	}
	_, ls := gateway(t, &stack, wrong...)

	problems := CheckListenerFilters(ls, base.expect)
	if len(problems) == 0 {
		t.Fatal("the listener-filter check passed the blog's EnvoyFilter")
	}
	httpsPort := uint32(0)
	for port, name := range base.expect.HAProxyPorts {
		if name == "https" {
			httpsPort = port
		}
	}
	var https *listener.Listener
	for _, l := range ls {
		if listenerPort(l) == httpsPort {
			https = l
		}
	}
	if https == nil {
		t.Fatalf("no listener on port %d", httpsPort)
	}
	names := listenerFilterNames(https)
	if len(names) == 0 || names[0] != tlsInspectorFilter {
		t.Errorf("%s: want tls_inspector first under the blog's filter, got %v", https.Name, names)
	}
	found := false
	for _, p := range problems {
		if strings.HasPrefix(p, https.Name+":") && strings.Contains(p, "reads the PROXY header before") {
			found = true
		}
	}
	if !found {
		t.Errorf("no problem reported for tls_inspector first on %s; problems: %v", https.Name, problems)
	}
	t.Logf("the check reports, as it should:\n  %s", strings.Join(problems, "\n  "))
}

// TestProxyConfigComesFromRenderedObjects: the gateway's ProxyConfig is what Istio's own merge of
// the rendered mesh config and pod annotation gives, and it matches the stack outputs. The pods
// carry Istio's native parser in both modes (the stacks run Istio >= 1.19): a mode switch then
// never changes what the pods read at start, and in envoyfilter mode the EnvoyFilter replaces it.
func TestProxyConfigComesFromRenderedObjects(t *testing.T) {
	for _, r := range loadRenders(t) {
		t.Run(r.name, func(t *testing.T) {
			_, pc, err := MeshAndProxyConfig(r.stack)
			if err != nil {
				t.Fatal(err)
			}
			topology := pc.GetGatewayTopology()
			if topology.GetNumTrustedProxies() != r.expect.TrustedHops {
				t.Errorf("numTrustedProxies = %d, want %d", topology.GetNumTrustedProxies(), r.expect.TrustedHops)
			}
			if topology.GetProxyProtocol() == nil {
				t.Errorf("gatewayTopology.proxyProtocol is not set (mode %s); the pods must carry it in both modes", r.stack.Outputs.ProxyProtocol.Mode)
			}
		})
	}
}

// TestGatewayServerPortsBecomeServiceTargetPorts: the sample Gateway names Service ports 80/443;
// istiod's own port translation (through the gateway Service in the fake registry) makes Envoy
// listen on the targetPorts, which are the ports HAProxy's frontends and our EnvoyFilter use.
func TestGatewayServerPortsBecomeServiceTargetPorts(t *testing.T) {
	for _, r := range loadRenders(t) {
		t.Run(r.name, func(t *testing.T) {
			_, ls := gateway(t, r.stack)
			got := map[uint32]bool{}
			for _, l := range ls {
				got[listenerPort(l)] = true
			}
			want := map[uint32]bool{8081: true} // the sample apps' port outside the Service
			for port := range r.expect.HAProxyPorts {
				want[port] = true
			}
			if len(got) != len(want) {
				t.Errorf("listener ports %v, want %v", got, want)
			}
			for port := range want {
				if !got[port] {
					t.Errorf("no listener on port %d; listener ports %v", port, got)
				}
			}
		})
	}
}

// TestChecksFailOnWrongExpectations: each check reports a problem when the listeners differ from
// what is expected, so a passing check is not a check that cannot fail.
func TestChecksFailOnWrongExpectations(t *testing.T) {
	var r *renderedStack
	for _, candidate := range loadRenders(t) {
		if len(candidate.expect.Allow) > 0 && len(candidate.expect.Deny) > 0 {
			r = &candidate
			break
		}
	}
	if r == nil {
		t.Fatal("no rendered stack has both an allow and a deny list")
	}
	_, ls := gateway(t, r.stack)
	mutations := []struct {
		name  string
		check func([]*listener.Listener, Expectations) []string
		wrong func(e *Expectations)
	}{
		{"strictness flipped", CheckListenerFilters, func(e *Expectations) { e.Strict = !e.Strict }},
		{"mode flipped", CheckListenerFilters, func(e *Expectations) { e.Native = !e.Native }},
		{"another HAProxy port", CheckListenerFilters, func(e *Expectations) { e.HAProxyPorts[9999] = "extra" }},
		{"trusted hops off by one", CheckXFF, func(e *Expectations) { e.TrustedHops++ }},
		{"allow and deny swapped", CheckRBAC, func(e *Expectations) { e.Allow, e.Deny = e.Deny, e.Allow }},
		{"a CIDR no policy has", CheckRBAC, func(e *Expectations) { e.Deny = append(e.Deny, netip.MustParsePrefix("192.0.2.0/24")) }},
		{"another trusted peer", CheckTrustedPeerLock, func(e *Expectations) {
			e.TrustedPeers = append(append([]netip.Prefix{}, e.TrustedPeers...), netip.MustParsePrefix("192.0.2.99/32"))
		}},
	}
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			e := r.expect
			e.HAProxyPorts = map[uint32]string{}
			for k, v := range r.expect.HAProxyPorts {
				e.HAProxyPorts[k] = v
			}
			if problems := m.check(ls, e); len(problems) != 0 {
				t.Fatalf("the check fails before the mutation: %v", problems)
			}
			m.wrong(&e)
			if problems := m.check(ls, e); len(problems) == 0 {
				t.Errorf("the check passed with %s", m.name)
			}
		})
	}
}

// switchedStack is one moment of a proxyProtocol.mode switch: the gateway pods of one stack (their
// ProxyConfig, from the mesh config at injection and the pod annotation) while istiod already, or
// still, holds the Istio objects of the other.
func switchedStack(pods, objects *RenderedStack) *RenderedStack {
	s := *pods
	s.IstioConfigs = objects.IstioConfigs
	return &s
}

// sameGateway: two stacks a user could switch between, the same gateway fronted on the same ports.
func sameGateway(a, b renderedStack) bool {
	ga, gb := a.stack.Outputs.Gateway, b.stack.Outputs.Gateway
	if ga.Namespace != gb.Namespace || ga.Name != gb.Name || ga.Managed != gb.Managed || len(a.expect.HAProxyPorts) != len(b.expect.HAProxyPorts) {
		return false
	}
	for port := range a.expect.HAProxyPorts {
		if _, ok := b.expect.HAProxyPorts[port]; !ok {
			return false
		}
	}
	return true
}

// TestModeSwitchKeepsOnePROXYParser: switching proxyProtocol.mode in one `pulumi up` never leaves
// a listener HAProxy sends to with zero or two proxy_protocol filters. In either order of the
// update's steps (the EnvoyFilter created or deleted before or after any pod of the other stack
// starts) every pod gets exactly what the Istio objects in place say: the pods are the same in
// both modes, and the EnvoyFilter replaces their native parser. Pairs: every two rendered stacks of
// different modes on the same gateway and ports (dev and prod, old-chart-ports and
// native-old-chart-ports, adopted-envoyfilter and adopted-native, ...).
func TestModeSwitchKeepsOnePROXYParser(t *testing.T) {
	renders := loadRenders(t)
	pairs := 0
	for _, from := range renders {
		for _, to := range renders {
			if from.stack.Outputs.ProxyProtocol.Mode == to.stack.Outputs.ProxyProtocol.Mode || !sameGateway(from, to) {
				continue
			}
			pairs++
			from, to := from, to
			t.Run(from.name+"_to_"+to.name, func(t *testing.T) {
				states := []struct {
					name          string
					pods, objects renderedStack
				}{
					{"istio_objects_switched_pods_not_yet", from, to},
					{"pods_switched_istio_objects_not_yet", to, from},
				}
				for _, st := range states {
					t.Run(st.name, func(t *testing.T) {
						_, ls := gateway(t, switchedStack(st.pods.stack, st.objects.stack))
						expectNoProblems(t, "listener filters", CheckListenerFilters(ls, st.objects.expect))
					})
				}
			})
		}
	}
	if pairs == 0 {
		t.Fatal("no two rendered stacks of different modes share a gateway and its ports: no switch is tested")
	}
}

// withoutRemovePatches is the EnvoyFilter as it was before it owned the listener filters: insert
// only, no removal of other proxy_protocol filters.
func withoutRemovePatches(configs []config.Config) []config.Config {
	var out []config.Config
	for _, c := range configs {
		if c.GroupVersionKind == gvk.EnvoyFilter {
			c = c.DeepCopy()
			ef := c.Spec.(*networking.EnvoyFilter)
			var kept []*networking.EnvoyFilter_EnvoyConfigObjectPatch
			for _, cp := range ef.ConfigPatches {
				if cp.GetPatch().GetOperation() != networking.EnvoyFilter_Patch_REMOVE {
					kept = append(kept, cp)
				}
			}
			ef.ConfigPatches = kept
		}
		out = append(out, c)
	}
	return out
}

// TestSwitchCheckCatchesTheOldDesign: a design where the pods carried the native parser only in
// native mode and the EnvoyFilter only inserted its own, so a switch rolled the pods: native pods
// next to the EnvoyFilter not yet deleted had two parsers, envoyfilter pods before the EnvoyFilter
// existed had none. The listener-filter check reports both states.
func TestSwitchCheckCatchesTheOldDesign(t *testing.T) {
	base := strictEnvoyFilterStack(t)
	t.Run("native_pods_with_an_insert_only_envoyfilter", func(t *testing.T) {
		stack := *base.stack
		stack.IstioConfigs = withoutRemovePatches(base.stack.IstioConfigs)
		stack.ProxyConfigAnnotation = fmt.Sprintf(`{"gatewayTopology": {"numTrustedProxies": %d, "proxyProtocol": {}}}`, base.expect.TrustedHops)
		_, ls := gateway(t, &stack)
		expectProblem(t, CheckListenerFilters(ls, base.expect), "want exactly one "+proxyProtocolFilter+", got 2")
	})
	t.Run("pods_without_native_parser_and_no_envoyfilter", func(t *testing.T) {
		stack := *base.stack
		stack.IstioConfigs = nil
		for _, c := range base.stack.IstioConfigs {
			if c.GroupVersionKind != gvk.EnvoyFilter {
				stack.IstioConfigs = append(stack.IstioConfigs, c)
			}
		}
		stack.MeshConfigYAML = ""
		stack.ProxyConfigAnnotation = fmt.Sprintf(`{"gatewayTopology": {"numTrustedProxies": %d}}`, base.expect.TrustedHops)
		native := base.expect
		native.Native = true
		_, ls := gateway(t, &stack)
		expectProblem(t, CheckListenerFilters(ls, native), "want exactly one "+proxyProtocolFilter+", got 0")
	})
}

// TestUnscopedTrustedPeerPolicyIsCaught: the lock as it was before, an AuthorizationPolicy on the
// whole gateway, reaches the listener HAProxy does not send to; the trusted-peer check reports it.
func TestUnscopedTrustedPeerPolicyIsCaught(t *testing.T) {
	var r *renderedStack
	for _, candidate := range loadRenders(t) {
		if len(candidate.expect.TrustedPeers) > 0 && !candidate.expect.Native {
			r = &candidate
			break
		}
	}
	if r == nil {
		t.Fatal("no rendered envoyfilter stack has trustedPeers")
	}
	peers := make([]string, 0, len(r.expect.TrustedPeers))
	for _, p := range r.expect.TrustedPeers {
		peers = append(peers, p.String())
	}
	unscoped, _, err := crd.ParseInputs(fmt.Sprintf(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: unscoped-trusted-peers, namespace: %s}
spec:
  action: DENY
  rules:
  - from:
    - source: {notIpBlocks: [%s]}
`, r.stack.Outputs.Gateway.Namespace, strings.Join(peers, ", ")))
	if err != nil {
		t.Fatal(err)
	}
	_, ls := gateway(t, r.stack, unscoped...)
	expectProblem(t, CheckTrustedPeerLock(ls, r.expect), "parses no PROXY header, but a DENY rule names trusted peer")
}

func expectProblem(t *testing.T, problems []string, want string) {
	t.Helper()
	for _, p := range problems {
		if strings.Contains(p, want) {
			t.Logf("reported, as it should be: %s", p)
			return
		}
	}
	t.Errorf("no problem contains %q; problems: %v", want, problems)
}

// TestProbesCatchSpoofingAndAMissingLock proves the probes can fail, on a stack with allow, deny
// and trusted-peer lists, by changing the generated listeners the way real mistakes would:
//   - xff_num_trusted_hops 2 behind one HAProxy (the blogs' numTrustedProxies: 2): the denied
//     visitor's forged X-Forwarded-For entry becomes its address;
//   - the trusted-peer lock gone (its network RBAC filter removed): a PROXY header from any peer is
//     believed.
func TestProbesCatchSpoofingAndAMissingLock(t *testing.T) {
	var r *renderedStack
	for _, candidate := range loadRenders(t) {
		e := candidate.expect
		if len(e.Allow) > 0 && len(e.Deny) > 0 && len(e.TrustedPeers) > 0 && e.TrustedHops == 0 {
			r = &candidate
			break
		}
	}
	if r == nil {
		t.Fatal("no rendered stack has allow, deny and trustedPeers lists with numTrustedProxies 0")
	}
	_, ls := gateway(t, r.stack)
	expectNoProblems(t, "probes on the generated listeners", CheckProbes(ls, r.expect))

	spoofable := cloneListeners(ls)
	for _, l := range spoofable {
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				h := &hcm.HttpConnectionManager{}
				if f.Name != hcmFilter || f.GetTypedConfig().UnmarshalTo(h) != nil {
					continue
				}
				h.XffNumTrustedHops = 2
				typed, err := anypb.New(h)
				if err != nil {
					t.Fatal(err)
				}
				f.ConfigType = &listener.Filter_TypedConfig{TypedConfig: typed}
			}
		}
	}
	expectProblem(t, CheckProbes(spoofable, r.expect), "forges X-Forwarded-For with an allowed address: allowed=true")

	unlocked := cloneListeners(ls)
	for _, l := range unlocked {
		for _, fc := range l.FilterChains {
			var kept []*listener.Filter
			for _, f := range fc.Filters {
				m := &rbacnetwork.RBAC{}
				if f.Name == networkRBACFilter && f.GetTypedConfig().UnmarshalTo(m) == nil && m.GetRules().GetPolicies()["direct-peer-not-trusted"] != nil {
					continue
				}
				kept = append(kept, f)
			}
			fc.Filters = kept
		}
	}
	expectProblem(t, CheckProbes(unlocked, r.expect), "straight from a peer that is not HAProxy: allowed=true")
}

func cloneListeners(ls []*listener.Listener) []*listener.Listener {
	out := make([]*listener.Listener, 0, len(ls))
	for _, l := range ls {
		out = append(out, proto.Clone(l).(*listener.Listener))
	}
	return out
}
