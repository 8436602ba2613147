package main

// Facts: what the checks looked at, per listener, as data (make lab's proof table prints them).

import (
	"net/netip"
	"sort"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
)

// ListenerFacts is one listener as the checks see it.
type ListenerFacts struct {
	Name string `json:"name"`
	Port uint32 `json:"port"`
	// Frontend is the HAProxy frontend that sends here ("" when none does).
	Frontend        string   `json:"frontend"`
	ListenerFilters []string `json:"listenerFilters"`
	// ProxyProtocolCount: proxy_protocol filters; AllowWithoutProxyProtocol is the first one's.
	ProxyProtocolCount        int     `json:"proxyProtocolCount"`
	AllowWithoutProxyProtocol *bool   `json:"allowRequestsWithoutProxyProtocol"`
	XffNumTrustedHops         []int64 `json:"xffNumTrustedHops"`
	// RemoteIPAllow / RemoteIPDeny: remote_ip principals of ALLOW / DENY rules, on every chain.
	RemoteIPAllow []string `json:"remoteIpAllow"`
	RemoteIPDeny  []string `json:"remoteIpDeny"`
	// DirectPeersOnly: the direct_remote_ip CIDRs a DENY rule refuses everyone but (the lock).
	DirectPeersOnly []string `json:"directPeersOnly"`
}

// Facts is the checks' results with the listeners they ran on and what the config expects.
type Facts struct {
	Checks    map[string][]string `json:"checks"`
	Listeners []ListenerFacts     `json:"listeners"`
	Probes    []Probe             `json:"probes"`
	// ProbesSkipped: probes the configuration's lists give no addresses for, and why.
	ProbesSkipped []string `json:"probesSkipped"`
	// Pods: live, the gateway pods istiod was asked as (these facts are the first one's; every
	// pod's listeners were checked); empty offline.
	Pods     []string `json:"pods,omitempty"`
	Expected struct {
		TrustedHops  uint32   `json:"xffNumTrustedHops"`
		Strict       bool     `json:"strict"`
		Native       bool     `json:"native"`
		Allow        []string `json:"allow"`
		Deny         []string `json:"deny"`
		TrustedPeers []string `json:"trustedPeers"`
	} `json:"expected"`
}

// FactsOf gathers the facts of every listener.
func FactsOf(ls []*listener.Listener, e Expectations, checks map[string][]string, pods []string) Facts {
	f := Facts{Checks: checks, Listeners: []ListenerFacts{}, Pods: pods}
	f.Probes, f.ProbesSkipped = RunProbes(ls, e)
	f.Expected.TrustedHops, f.Expected.Strict, f.Expected.Native = e.TrustedHops, e.Strict, e.Native
	f.Expected.Allow, f.Expected.Deny, f.Expected.TrustedPeers = prefixStrings(e.Allow), prefixStrings(e.Deny), prefixStrings(e.TrustedPeers)
	for _, l := range ls {
		lf := ListenerFacts{Name: l.Name, Port: listenerPort(l), Frontend: e.HAProxyPorts[listenerPort(l)],
			ListenerFilters: listenerFilterNames(l)}
		for _, filter := range l.ListenerFilters {
			if filter.Name != proxyProtocolFilter {
				continue
			}
			lf.ProxyProtocolCount++
			if pp, err := proxyProtocolConfig(filter); err == nil && lf.AllowWithoutProxyProtocol == nil {
				allow := pp.AllowRequestsWithoutProxyProtocol
				lf.AllowWithoutProxyProtocol = &allow
			}
		}
		hops := map[int64]bool{}
		allow, deny, peers := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
		for _, fc := range l.FilterChains {
			if hcms, err := chainHCMs(fc); err == nil {
				for _, h := range hcms {
					hops[int64(h.XffNumTrustedHops)] = true
				}
			}
			rules, err := chainRBAC(fc)
			if err != nil {
				continue
			}
			for _, r := range rules {
				remote, direct := allow, map[netip.Prefix]bool{}
				if r.Action == rbacconfig.RBAC_DENY {
					remote = deny
				}
				for _, principals := range r.Policies {
					for _, p := range principals {
						principalAddresses(p, false, remote, direct)
					}
				}
				if r.Action == rbacconfig.RBAC_DENY {
					for p := range directPeersOf(r).negated {
						peers[p] = true
					}
				}
			}
		}
		for h := range hops {
			lf.XffNumTrustedHops = append(lf.XffNumTrustedHops, h)
		}
		sort.Slice(lf.XffNumTrustedHops, func(i, j int) bool { return lf.XffNumTrustedHops[i] < lf.XffNumTrustedHops[j] })
		lf.RemoteIPAllow, lf.RemoteIPDeny, lf.DirectPeersOnly = setStrings(allow), setStrings(deny), setStrings(peers)
		f.Listeners = append(f.Listeners, lf)
	}
	return f
}

func prefixStrings(ps []netip.Prefix) []string {
	set := map[netip.Prefix]bool{}
	for _, p := range ps {
		set[p] = true
	}
	return setStrings(set)
}

func setStrings(set map[netip.Prefix]bool) []string {
	out := []string{}
	for p := range set {
		out = append(out, p.String())
	}
	sort.Strings(out)
	return out
}
