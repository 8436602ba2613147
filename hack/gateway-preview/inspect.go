package main

// Reading the parts of generated listeners that matter to the edge: listener filters, the HTTP
// connection managers' XFF settings, and the RBAC principals.

import (
	"fmt"
	"net/netip"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	proxyprotocol "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetwork "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	proxyProtocolFilter = "envoy.filters.listener.proxy_protocol"
	tlsInspectorFilter  = "envoy.filters.listener.tls_inspector"
	hcmFilter           = "envoy.filters.network.http_connection_manager"
	httpRBACFilter      = "envoy.filters.http.rbac"
	networkRBACFilter   = "envoy.filters.network.rbac"
)

// listenerPort is the port a listener binds.
func listenerPort(l *listener.Listener) uint32 {
	return l.GetAddress().GetSocketAddress().GetPortValue()
}

// listenerFilterNames lists a listener's listener filters in order.
func listenerFilterNames(l *listener.Listener) []string {
	names := make([]string, 0, len(l.ListenerFilters))
	for _, f := range l.ListenerFilters {
		names = append(names, f.Name)
	}
	return names
}

// indexOf is the position of name in names, or -1.
func indexOf(names []string, name string) int {
	for i, n := range names {
		if n == name {
			return i
		}
	}
	return -1
}

// proxyProtocolConfig decodes a proxy_protocol listener filter's typed config; an error if it has
// none (Envoy rejects name-only listener filters since Istio 1.19) or one of another type.
func proxyProtocolConfig(f *listener.ListenerFilter) (*proxyprotocol.ProxyProtocol, error) {
	typed := f.GetTypedConfig()
	if typed == nil {
		return nil, fmt.Errorf("%s has no typed_config", f.Name)
	}
	pp := &proxyprotocol.ProxyProtocol{}
	if err := typed.UnmarshalTo(pp); err != nil {
		return nil, fmt.Errorf("%s typed_config is %s, not ProxyProtocol: %v", f.Name, typed.TypeUrl, err)
	}
	return pp, nil
}

// chainHCMs returns the HTTP connection managers of a filter chain.
func chainHCMs(fc *listener.FilterChain) ([]*hcm.HttpConnectionManager, error) {
	var out []*hcm.HttpConnectionManager
	for _, f := range fc.Filters {
		if f.Name != hcmFilter {
			continue
		}
		m := &hcm.HttpConnectionManager{}
		if err := anyTo(f.GetTypedConfig(), m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// rbacRules is one enforced RBAC filter: its action and the principals of its policies.
type rbacRules struct {
	Filter string // envoy.filters.http.rbac or envoy.filters.network.rbac
	Action rbacconfig.RBAC_Action
	// Policies maps policy name to its principals.
	Policies map[string][]*rbacconfig.Principal
	// Rules is the whole rule set (permissions too), for evaluating a connection (probes.go).
	Rules *rbacconfig.RBAC
}

// chainRBAC returns the enforced (not shadow) RBAC rules of a filter chain, network filters first,
// then the HTTP filters of its connection managers, in filter order.
func chainRBAC(fc *listener.FilterChain) ([]rbacRules, error) {
	var out []rbacRules
	add := func(filter string, rules *rbacconfig.RBAC) {
		if rules == nil {
			return
		}
		r := rbacRules{Filter: filter, Action: rules.Action, Policies: map[string][]*rbacconfig.Principal{}, Rules: rules}
		for name, p := range rules.Policies {
			r.Policies[name] = p.Principals
		}
		out = append(out, r)
	}
	for _, f := range fc.Filters {
		if f.Name == networkRBACFilter {
			m := &rbacnetwork.RBAC{}
			if err := anyTo(f.GetTypedConfig(), m); err != nil {
				return nil, err
			}
			add(f.Name, m.Rules)
		}
	}
	hcms, err := chainHCMs(fc)
	if err != nil {
		return nil, err
	}
	for _, h := range hcms {
		for _, f := range h.HttpFilters {
			if f.Name != httpRBACFilter {
				continue
			}
			m := &rbachttp.RBAC{}
			if err := anyTo(f.GetTypedConfig(), m); err != nil {
				return nil, err
			}
			add(f.Name, m.Rules)
		}
	}
	return out, nil
}

// principalAddresses collects the CIDRs a principal matches on, positively (not under a not_id):
// remote (PROXY/XFF-derived) and direct (the TCP peer).
func principalAddresses(p *rbacconfig.Principal, negated bool, remote, direct map[netip.Prefix]bool) {
	switch id := p.GetIdentifier().(type) {
	case *rbacconfig.Principal_AndIds:
		for _, c := range id.AndIds.Ids {
			principalAddresses(c, negated, remote, direct)
		}
	case *rbacconfig.Principal_OrIds:
		for _, c := range id.OrIds.Ids {
			principalAddresses(c, negated, remote, direct)
		}
	case *rbacconfig.Principal_NotId:
		principalAddresses(id.NotId, !negated, remote, direct)
	case *rbacconfig.Principal_RemoteIp:
		if !negated {
			remote[cidr(id.RemoteIp)] = true
		}
	case *rbacconfig.Principal_DirectRemoteIp:
		if !negated {
			direct[cidr(id.DirectRemoteIp)] = true
		}
	case *rbacconfig.Principal_SourceIp: //nolint:staticcheck // deprecated alias of direct_remote_ip
		if !negated {
			direct[cidr(id.SourceIp)] = true
		}
	}
}

func cidr(r *core.CidrRange) netip.Prefix {
	addr, err := netip.ParseAddr(r.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(addr, int(r.GetPrefixLen().GetValue())).Masked()
}

// describePrincipal renders a principal compactly: remote_ip(a/b), direct_remote_ip(...), not(...).
func describePrincipal(p *rbacconfig.Principal) string {
	join := func(op string, ids []*rbacconfig.Principal) string {
		parts := make([]string, 0, len(ids))
		for _, c := range ids {
			parts = append(parts, describePrincipal(c))
		}
		if len(parts) == 1 {
			return parts[0]
		}
		return op + "(" + strings.Join(parts, ", ") + ")"
	}
	switch id := p.GetIdentifier().(type) {
	case *rbacconfig.Principal_AndIds:
		return join("and", id.AndIds.Ids)
	case *rbacconfig.Principal_OrIds:
		return join("or", id.OrIds.Ids)
	case *rbacconfig.Principal_NotId:
		return "not(" + describePrincipal(id.NotId) + ")"
	case *rbacconfig.Principal_Any:
		return "any"
	case *rbacconfig.Principal_RemoteIp:
		return "remote_ip(" + cidr(id.RemoteIp).String() + ")"
	case *rbacconfig.Principal_DirectRemoteIp:
		return "direct_remote_ip(" + cidr(id.DirectRemoteIp).String() + ")"
	case *rbacconfig.Principal_SourceIp: //nolint:staticcheck
		return "source_ip(" + cidr(id.SourceIp).String() + ")"
	default:
		return fmt.Sprintf("%T", id)
	}
}

func anyTo(a *anypb.Any, m proto.Message) error {
	if a == nil {
		return fmt.Errorf("filter has no typed_config")
	}
	return a.UnmarshalTo(m)
}
