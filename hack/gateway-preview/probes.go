package main

// Probes: connections the gateway could get, decided by the RBAC rules of the listeners istiod
// generated, the way Envoy decides them. They turn "a forged X-Forwarded-For is ignored" and "a PROXY
// header from a peer that is not HAProxy is refused" into verdicts on the real listeners:
//
//   - the address RBAC's remote_ip sees is the downstream remote address: the PROXY header's source
//     when the listener parses PROXY (proxy_protocol listener filter), else the TCP peer; for HTTP,
//     with use_remote_address and xff_num_trusted_hops N > 0, the Nth X-Forwarded-For entry from
//     the right instead (Envoy's "original IP detection", XFF extension);
//   - direct_remote_ip is always the TCP peer;
//   - a policy matches when one of its permissions and one of its principals match; a DENY filter
//     refuses when a policy matches, an ALLOW filter refuses when none does; network RBAC filters
//     run first, then the HTTP ones, and every filter must let the connection through.

import (
	"fmt"
	"net/netip"
	"sort"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
)

// Connection is what one probe sends.
type Connection struct {
	DirectPeer  netip.Addr   // the TCP peer (HAProxy, or whoever connects)
	ProxySource netip.Addr   // the PROXY header's source address
	DestPort    uint32       // the PROXY header's destination port (what RBAC sees as the port)
	XFF         []netip.Addr // X-Forwarded-For, left to right, as the client sent it
}

// Probe is one connection on one filter chain and the verdict.
type Probe struct {
	Name        string   `json:"name"`
	Listener    string   `json:"listener"`
	FilterChain int      `json:"filterChain"`
	DirectPeer  string   `json:"directPeer"`
	ProxySource string   `json:"proxySource"`
	XFF         []string `json:"xForwardedFor"`
	// Effective is the address remote_ip principals were matched against.
	Effective string `json:"effectiveRemoteIp"`
	Allowed   bool   `json:"allowed"`
	// DecidedBy names the RBAC filter and policy that refused it ("" when allowed).
	DecidedBy string `json:"decidedBy"`
	Want      bool   `json:"wantAllowed"`
	Error     string `json:"error,omitempty"`
}

// probeCase is a connection and the verdict the configuration promises for it.
type probeCase struct {
	name string
	conn Connection
	want bool
}

// ProbeCases derives the probes from the configuration's own lists: a visitor the allow list lets
// in (any documentation address when there is no allow list), one the deny list names, a trusted
// HAProxy peer and an address outside them. A probe the lists give no addresses for is not built
// (no deny list: no denied visitor; no trusted peers: no lock to probe); the reasons are returned.
func ProbeCases(e Expectations) ([]probeCase, []string) {
	var skipped []string
	documentation := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.0/24")}
	allowFrom := e.Allow
	if len(allowFrom) == 0 {
		allowFrom = documentation
	}
	allowed, ok := firstAddrOutside(allowFrom, append(append([]netip.Prefix{}, e.Deny...), e.TrustedPeers...))
	if !ok {
		return nil, []string{"no IPv4 address allowed by access.allow outside access.deny and access.trustedPeers"}
	}
	peer, locked := firstAddr(e.TrustedPeers)
	if !locked {
		peer = netip.MustParseAddr("192.0.2.10")
		skipped = append(skipped, "no IPv4 access.trustedPeers: no peer lock to probe")
	}
	// The visitor puts allowed addresses in X-Forwarded-For, more than any sane hop count; each of
	// the N trusted proxies in front of the gateway appends its peer (the first one: the visitor).
	// Envoy takes the Nth entry from the right: with the configured N that is the visitor, with a
	// larger N (the blogs' numTrustedProxies: 2 behind one HAProxy) one of the forged entries.
	forgedXFF := func(client netip.Addr) []netip.Addr {
		out := []netip.Addr{allowed, allowed, allowed, allowed}
		if e.TrustedHops > 0 {
			out = append(out, client)
		}
		for i := uint32(1); i < e.TrustedHops; i++ {
			out = append(out, peer)
		}
		return out
	}
	cases := []probeCase{{"visitor on the allow list, through HAProxy", Connection{DirectPeer: peer, ProxySource: allowed}, true}}
	if denied, ok := firstAddr(e.Deny); ok {
		cases = append(cases,
			probeCase{"visitor on the deny list, through HAProxy", Connection{DirectPeer: peer, ProxySource: denied}, false},
			probeCase{"visitor on the deny list forges X-Forwarded-For with an allowed address", Connection{DirectPeer: peer, ProxySource: denied, XFF: forgedXFF(denied)}, false})
	} else {
		skipped = append(skipped, "no IPv4 access.deny: no denied visitor to probe")
	}
	if locked {
		stranger, _ := firstAddrOutside([]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.18.0.0/15")}, e.TrustedPeers)
		cases = append(cases, probeCase{"PROXY header with an allowed source, straight from a peer that is not HAProxy",
			Connection{DirectPeer: stranger, ProxySource: allowed}, false})
	}
	return cases, skipped
}

// RunProbes decides every probe on every filter chain of the listeners HAProxy sends to.
func RunProbes(ls []*listener.Listener, e Expectations) ([]Probe, []string) {
	cases, skipped := ProbeCases(e)
	var out []Probe
	for _, l := range ls {
		port := listenerPort(l)
		if _, fronted := e.HAProxyPorts[port]; !fronted {
			continue
		}
		parsesPROXY := indexOf(listenerFilterNames(l), proxyProtocolFilter) >= 0
		for i, fc := range l.FilterChains {
			for _, c := range cases {
				conn := c.conn
				conn.DestPort = port
				p := Probe{Name: c.name, Listener: l.Name, FilterChain: i, DirectPeer: conn.DirectPeer.String(),
					ProxySource: conn.ProxySource.String(), XFF: addrStrings(conn.XFF), Want: c.want}
				allowed, by, effective, err := decide(fc, conn, parsesPROXY)
				p.Allowed, p.DecidedBy, p.Effective = allowed, by, effective.String()
				if err != nil {
					p.Error = err.Error()
				}
				out = append(out, p)
			}
		}
	}
	return out, skipped
}

// CheckProbes: every probe got the verdict the configuration promises.
func CheckProbes(ls []*listener.Listener, e Expectations) []string {
	probes, _ := RunProbes(ls, e)
	var problems []string
	if len(probes) == 0 && len(e.HAProxyPorts) > 0 {
		problems = append(problems, "no probe ran: no listener HAProxy sends to, or no address to probe with")
	}
	for _, p := range probes {
		switch {
		case p.Error != "":
			problems = append(problems, fmt.Sprintf("%s chain %d, %s: %s", p.Listener, p.FilterChain, p.Name, p.Error))
		case p.Allowed != p.Want:
			problems = append(problems, fmt.Sprintf("%s chain %d, %s: allowed=%v, want %v (remote_ip seen: %s, refused by %q)",
				p.Listener, p.FilterChain, p.Name, p.Allowed, p.Want, p.Effective, p.DecidedBy))
		}
	}
	return problems
}

// decide runs a connection through a filter chain's RBAC filters.
func decide(fc *listener.FilterChain, c Connection, parsesPROXY bool) (bool, string, netip.Addr, error) {
	remote := c.DirectPeer
	if parsesPROXY {
		remote = c.ProxySource
	}
	rules, err := chainRBAC(fc)
	if err != nil {
		return false, "", remote, err
	}
	hcms, err := chainHCMs(fc)
	if err != nil {
		return false, "", remote, err
	}
	httpRemote := remote
	for _, h := range hcms {
		if n := int(h.XffNumTrustedHops); h.GetUseRemoteAddress().GetValue() && n > 0 && len(c.XFF) >= n {
			httpRemote = c.XFF[len(c.XFF)-n]
		}
	}
	effective := remote
	for _, r := range rules {
		env := rbacEnv{direct: c.DirectPeer, remote: remote, port: c.DestPort}
		if r.Filter == httpRBACFilter {
			env.remote, effective = httpRemote, httpRemote
		}
		matched, policy, err := env.matchRules(r.Rules)
		if err != nil {
			return false, "", effective, err
		}
		if (r.Action == rbacconfig.RBAC_DENY) == matched {
			by := policy
			if r.Action == rbacconfig.RBAC_ALLOW {
				by = "no ALLOW policy matched"
			}
			return false, shortFilter(r.Filter) + " " + r.Action.String() + " " + by, effective, nil
		}
	}
	return true, "", effective, nil
}

type rbacEnv struct {
	direct, remote netip.Addr
	port           uint32
}

// matchRules: whether a policy matches, and which (the first by name, for a stable report).
func (env rbacEnv) matchRules(rules *rbacconfig.RBAC) (bool, string, error) {
	names := make([]string, 0, len(rules.GetPolicies()))
	for name := range rules.GetPolicies() {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		policy := rules.Policies[name]
		permitted := false
		for _, perm := range policy.Permissions {
			ok, err := env.permission(perm)
			if err != nil {
				return false, "", fmt.Errorf("policy %s: %v", name, err)
			}
			permitted = permitted || ok
		}
		if !permitted {
			continue
		}
		ok, err := anyOf(policy.Principals, env.principal)
		if err != nil {
			return false, "", fmt.Errorf("policy %s: %v", name, err)
		}
		if ok {
			return true, name, nil
		}
	}
	return false, "", nil
}

// allOf: every item matches (false at the first that does not, or at an error), as and_ids and
// and_rules; anyOf: one does (true at the first that does), as or_ids, or_rules and a policy's
// principals.
func allOf[T any](items []T, match func(T) (bool, error)) (bool, error) {
	for _, item := range items {
		if ok, err := match(item); err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

func anyOf[T any](items []T, match func(T) (bool, error)) (bool, error) {
	for _, item := range items {
		if ok, err := match(item); err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func (env rbacEnv) principal(p *rbacconfig.Principal) (bool, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbacconfig.Principal_Any:
		return id.Any, nil
	case *rbacconfig.Principal_AndIds:
		return allOf(id.AndIds.Ids, env.principal)
	case *rbacconfig.Principal_OrIds:
		return anyOf(id.OrIds.Ids, env.principal)
	case *rbacconfig.Principal_NotId:
		ok, err := env.principal(id.NotId)
		return !ok, err
	case *rbacconfig.Principal_RemoteIp:
		return cidr(id.RemoteIp).Contains(env.remote), nil
	case *rbacconfig.Principal_DirectRemoteIp:
		return cidr(id.DirectRemoteIp).Contains(env.direct), nil
	case *rbacconfig.Principal_SourceIp: //nolint:staticcheck // deprecated alias of direct_remote_ip
		return cidr(id.SourceIp).Contains(env.direct), nil
	}
	return false, fmt.Errorf("principal %s is not evaluated by the probes", describePrincipal(p))
}

func (env rbacEnv) permission(p *rbacconfig.Permission) (bool, error) {
	switch r := p.GetRule().(type) {
	case *rbacconfig.Permission_Any:
		return r.Any, nil
	case *rbacconfig.Permission_AndRules:
		return allOf(r.AndRules.Rules, env.permission)
	case *rbacconfig.Permission_OrRules:
		return anyOf(r.OrRules.Rules, env.permission)
	case *rbacconfig.Permission_NotRule:
		ok, err := env.permission(r.NotRule)
		return !ok, err
	case *rbacconfig.Permission_DestinationPort:
		return r.DestinationPort == env.port, nil
	}
	return false, fmt.Errorf("permission %T is not evaluated by the probes", p.GetRule())
}

// firstAddr is the first IPv4 address of the first IPv4 prefix (the lab and examples use
// documentation ranges; a /32 is its own address).
func firstAddr(ps []netip.Prefix) (netip.Addr, bool) {
	for _, p := range ps {
		if p.Addr().Is4() {
			return hostOf(p), true
		}
	}
	return netip.Addr{}, false
}

// firstAddrOutside is the first IPv4 address of in's prefixes that none of out's prefixes holds.
func firstAddrOutside(in, out []netip.Prefix) (netip.Addr, bool) {
	for _, p := range in {
		if !p.Addr().Is4() {
			continue
		}
		for a, n := hostOf(p), 0; p.Contains(a) && n < 4096; a, n = a.Next(), n+1 {
			inside := false
			for _, o := range out {
				inside = inside || o.Contains(a)
			}
			if !inside {
				return a, true
			}
		}
	}
	return netip.Addr{}, false
}

// hostOf is a prefix's first usable address (the network address itself for a /31 or /32).
func hostOf(p netip.Prefix) netip.Addr {
	if p.Bits() >= 31 {
		return p.Addr()
	}
	return p.Masked().Addr().Next()
}

func addrStrings(as []netip.Addr) []string {
	out := []string{}
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}
