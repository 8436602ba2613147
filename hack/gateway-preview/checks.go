package main

// The checks the edge rests on, run against the listeners istiod generated. Each returns the
// problems it found (empty: the check holds); the tests and the preview report both use them.

import (
	"fmt"
	"net/netip"
	"sort"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
)

// Expectations is what the stack configuration promises about the gateway.
type Expectations struct {
	// HAProxyPorts are the Envoy listener ports HAProxy sends PROXY headers to (frontend names).
	HAProxyPorts map[uint32]string
	// Native: Istio's gatewayTopology.proxyProtocol, which covers every listener of the gateway.
	Native bool
	Strict bool
	// TrustedHops is numTrustedProxies, i.e. Envoy's xff_num_trusted_hops.
	TrustedHops uint32
	Allow, Deny []netip.Prefix
	// TrustedPeers are the only direct peers (HAProxy's egress) the HAProxy listeners accept.
	TrustedPeers []netip.Prefix
}

// ExpectationsFor derives the expectations from the stack outputs and the stack file's access
// lists (the user's intent, not our AuthorizationPolicy objects).
func ExpectationsFor(s *RenderedStack, access StackAccess) (Expectations, error) {
	e := Expectations{
		HAProxyPorts: s.HAProxyListenerPorts(),
		Native:       s.Outputs.ProxyProtocol.Mode == "native",
		Strict:       s.Outputs.ProxyProtocol.Strict,
		TrustedHops:  s.Outputs.NumTrustedProxies,
	}
	parse := func(values []string) ([]netip.Prefix, error) {
		var out []netip.Prefix
		for _, v := range values {
			p, err := parsePrefix(v)
			if err != nil {
				return nil, err
			}
			out = append(out, p)
		}
		return out, nil
	}
	var err error
	if e.Allow, err = parse(access.Allow); err != nil {
		return e, err
	}
	if e.Deny, err = parse(access.Deny); err != nil {
		return e, err
	}
	if e.TrustedPeers, err = parse(access.TrustedPeers); err != nil {
		return e, err
	}
	return e, nil
}

// parsePrefix accepts a CIDR or a bare address (as AuthorizationPolicy does).
func parsePrefix(v string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(v); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR or address", v)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// CheckListenerFilters: every listener HAProxy sends to has exactly one proxy_protocol listener
// filter, first, with the ProxyProtocol typed config and allow_requests_without_proxy_protocol ==
// !strict, and any tls_inspector after it. Other listeners are untouched by the EnvoyFilter; with
// the native field they get the same strict filter (it is all or nothing per gateway).
func CheckListenerFilters(ls []*listener.Listener, e Expectations) []string {
	var problems []string
	seen := map[uint32]bool{}
	for _, l := range ls {
		port := listenerPort(l)
		_, fronted := e.HAProxyPorts[port]
		seen[port] = true
		wantPROXY := fronted || e.Native
		var ppIndexes, tlsIndexes []int
		for i, f := range l.ListenerFilters {
			switch f.Name {
			case proxyProtocolFilter:
				ppIndexes = append(ppIndexes, i)
			case tlsInspectorFilter:
				tlsIndexes = append(tlsIndexes, i)
			}
		}
		if !wantPROXY {
			if len(ppIndexes) > 0 {
				problems = append(problems, fmt.Sprintf("%s: HAProxy does not send here, but it has %s (clients without a PROXY header break)", l.Name, proxyProtocolFilter))
			}
			continue
		}
		if len(ppIndexes) != 1 {
			problems = append(problems, fmt.Sprintf("%s: want exactly one %s, got %d (filters %v)", l.Name, proxyProtocolFilter, len(ppIndexes), listenerFilterNames(l)))
			continue
		}
		if ppIndexes[0] != 0 {
			problems = append(problems, fmt.Sprintf("%s: %s is at position %d, want first (filters %v)", l.Name, proxyProtocolFilter, ppIndexes[0], listenerFilterNames(l)))
		}
		for _, i := range tlsIndexes {
			if i < ppIndexes[0] {
				problems = append(problems, fmt.Sprintf("%s: %s at %d reads the PROXY header before %s at %d", l.Name, tlsInspectorFilter, i, proxyProtocolFilter, ppIndexes[0]))
			}
		}
		pp, err := proxyProtocolConfig(l.ListenerFilters[ppIndexes[0]])
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", l.Name, err))
			continue
		}
		if got, want := pp.AllowRequestsWithoutProxyProtocol, !e.Strict; got != want {
			problems = append(problems, fmt.Sprintf("%s: allow_requests_without_proxy_protocol = %v, want %v (strict: %v)", l.Name, got, want, e.Strict))
		}
	}
	for port, frontend := range e.HAProxyPorts {
		if !seen[port] {
			problems = append(problems, fmt.Sprintf("no listener on port %d, where HAProxy frontend %q sends", port, frontend))
		}
	}
	sort.Strings(problems)
	return problems
}

// CheckXFF: every HTTP connection manager takes the downstream address as the client
// (use_remote_address) and trusts exactly numTrustedProxies X-Forwarded-For hops.
func CheckXFF(ls []*listener.Listener, e Expectations) []string {
	var problems []string
	count := 0
	for _, l := range ls {
		for _, fc := range l.FilterChains {
			hcms, err := chainHCMs(fc)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s/%s: %v", l.Name, fc.Name, err))
				continue
			}
			for _, h := range hcms {
				count++
				if !h.GetUseRemoteAddress().GetValue() {
					problems = append(problems, fmt.Sprintf("%s/%s: use_remote_address is not true", l.Name, fc.Name))
				}
				if h.XffNumTrustedHops != e.TrustedHops {
					problems = append(problems, fmt.Sprintf("%s/%s: xff_num_trusted_hops = %d, want %d", l.Name, fc.Name, h.XffNumTrustedHops, e.TrustedHops))
				}
			}
		}
	}
	if count == 0 {
		problems = append(problems, "no HTTP connection manager in any listener")
	}
	return problems
}

// CheckRBAC: on every filter chain of the listeners HAProxy sends to, each access.deny CIDR is a
// remote_ip principal of a DENY rule and each access.allow CIDR one of an ALLOW rule; no client
// CIDR is matched as direct_remote_ip (that is HAProxy's address, not the visitor's).
func CheckRBAC(ls []*listener.Listener, e Expectations) []string {
	var problems []string
	for _, l := range ls {
		_, fronted := e.HAProxyPorts[listenerPort(l)]
		for _, fc := range l.FilterChains {
			rules, err := chainRBAC(fc)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s/%s: %v", l.Name, fc.Name, err))
				continue
			}
			remote := map[rbacconfig.RBAC_Action]map[netip.Prefix]bool{}
			direct := map[netip.Prefix]bool{}
			for _, r := range rules {
				if remote[r.Action] == nil {
					remote[r.Action] = map[netip.Prefix]bool{}
				}
				for _, principals := range r.Policies {
					for _, p := range principals {
						principalAddresses(p, false, remote[r.Action], direct)
					}
				}
			}
			for _, want := range []struct {
				action rbacconfig.RBAC_Action
				cidrs  []netip.Prefix
			}{{rbacconfig.RBAC_DENY, e.Deny}, {rbacconfig.RBAC_ALLOW, e.Allow}} {
				for _, c := range want.cidrs {
					if direct[c] {
						problems = append(problems, fmt.Sprintf("%s/%s: client CIDR %s is matched on direct_remote_ip", l.Name, fc.Name, c))
					}
					if fronted && !remote[want.action][c] {
						problems = append(problems, fmt.Sprintf("%s/%s: %s is not a remote_ip principal of any %s rule", l.Name, fc.Name, c, want.action))
					}
				}
			}
		}
	}
	return problems
}

// CheckTrustedPeerLock: with access.trustedPeers, every filter chain of the listeners HAProxy
// sends to refuses any other direct peer (a DENY rule on not(direct_remote_ip in the trusted
// peers)), and no listener that parses no PROXY header has a rule on those peers: there the
// lock would only refuse the listener's own clients (in-cluster, through other Gateway ports).
func CheckTrustedPeerLock(ls []*listener.Listener, e Expectations) []string {
	var problems []string
	want := map[netip.Prefix]bool{}
	for _, p := range e.TrustedPeers {
		want[p] = true
	}
	for _, l := range ls {
		_, fronted := e.HAProxyPorts[listenerPort(l)]
		parsesPROXY := indexOf(listenerFilterNames(l), proxyProtocolFilter) >= 0
		for _, fc := range l.FilterChains {
			rules, err := chainRBAC(fc)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s/%s: %v", l.Name, fc.Name, err))
				continue
			}
			locked := false
			for _, r := range rules {
				peers := directPeersOf(r)
				if r.Action == rbacconfig.RBAC_DENY && len(want) > 0 && sameSet(peers.negated, want) {
					locked = true
				}
				if !parsesPROXY {
					for p := range want {
						if peers.negated[p] || peers.positive[p] {
							problems = append(problems, fmt.Sprintf("%s/%s: parses no PROXY header, but a %s rule names trusted peer %s on direct_remote_ip", l.Name, fc.Name, r.Action, p))
						}
					}
				}
			}
			if fronted && len(want) > 0 && !locked {
				problems = append(problems, fmt.Sprintf("%s/%s: HAProxy sends here, but no DENY rule refuses direct peers other than %v", l.Name, fc.Name, e.TrustedPeers))
			}
		}
	}
	sort.Strings(problems)
	return problems
}

// directPeers are the direct_remote_ip CIDRs one RBAC rule names, under a not_id or not.
type directPeers struct{ positive, negated map[netip.Prefix]bool }

func directPeersOf(r rbacRules) directPeers {
	out := directPeers{positive: map[netip.Prefix]bool{}, negated: map[netip.Prefix]bool{}}
	for _, principals := range r.Policies {
		for _, p := range principals {
			remote := map[netip.Prefix]bool{}
			principalAddresses(p, false, remote, out.positive)
			principalAddresses(p, true, remote, out.negated)
		}
	}
	return out
}

func sameSet(a, b map[netip.Prefix]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// CheckAll runs every check.
func CheckAll(ls []*listener.Listener, e Expectations) map[string][]string {
	return map[string][]string{
		"listener filters":  CheckListenerFilters(ls, e),
		"xff":               CheckXFF(ls, e),
		"rbac":              CheckRBAC(ls, e),
		"trusted-peer lock": CheckTrustedPeerLock(ls, e),
		"probes":            CheckProbes(ls, e),
	}
}
