package main

// The review summary and the full listeners as Envoy JSON.

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// WriteSummary prints, per listener, its listener filters in order and, per filter chain, the
// XFF settings and the RBAC principals.
func WriteSummary(w io.Writer, ls []*listener.Listener, e Expectations) error {
	for _, l := range ls {
		port := listenerPort(l)
		from := "not fronted by HAProxy"
		if frontend, ok := e.HAProxyPorts[port]; ok {
			from = fmt.Sprintf("HAProxy frontend %q sends here with PROXY", frontend)
		}
		fmt.Fprintf(w, "listener %s (port %d, %s)\n", l.Name, port, from)
		var filters []string
		for _, f := range l.ListenerFilters {
			desc := f.Name
			if f.Name == proxyProtocolFilter {
				if pp, err := proxyProtocolConfig(f); err != nil {
					desc += " [" + err.Error() + "]"
				} else {
					desc += fmt.Sprintf(" {allow_requests_without_proxy_protocol: %v}", pp.AllowRequestsWithoutProxyProtocol)
				}
			}
			filters = append(filters, desc)
		}
		if len(filters) == 0 {
			filters = []string{"(none)"}
		}
		fmt.Fprintf(w, "  listener filters: %s\n", strings.Join(filters, " -> "))
		for i, fc := range l.FilterChains {
			match := ""
			if sni := fc.GetFilterChainMatch().GetServerNames(); len(sni) > 0 {
				match = " sni=" + strings.Join(sni, ",")
			}
			name := ""
			if fc.Name != "" {
				name = " " + fc.Name
			}
			fmt.Fprintf(w, "  filter chain %d%s%s\n", i, name, match)
			hcms, err := chainHCMs(fc)
			if err != nil {
				return err
			}
			for _, h := range hcms {
				fmt.Fprintf(w, "    http: use_remote_address=%v xff_num_trusted_hops=%d\n",
					h.GetUseRemoteAddress().GetValue(), h.XffNumTrustedHops)
			}
			if len(hcms) == 0 {
				fmt.Fprintf(w, "    tcp: %s\n", strings.Join(networkFilterNames(fc), ", "))
			}
			rules, err := chainRBAC(fc)
			if err != nil {
				return err
			}
			for _, r := range rules {
				names := make([]string, 0, len(r.Policies))
				for name := range r.Policies {
					names = append(names, name)
				}
				sort.Strings(names)
				for _, name := range names {
					var principals []string
					for _, p := range r.Policies[name] {
						principals = append(principals, describePrincipal(p))
					}
					fmt.Fprintf(w, "    rbac %s %s %s: %s\n", shortFilter(r.Filter), r.Action, name, strings.Join(principals, " | "))
				}
			}
			if len(rules) == 0 {
				fmt.Fprintf(w, "    rbac: (none)\n")
			}
		}
	}
	return nil
}

func networkFilterNames(fc *listener.FilterChain) []string {
	var out []string
	for _, f := range fc.Filters {
		out = append(out, f.Name)
	}
	return out
}

func shortFilter(name string) string {
	if name == httpRBACFilter {
		return "http"
	}
	return "network"
}

// ListenersJSON renders the listeners as Envoy's JSON with proto field names, the form
// `istioctl proxy-config listener -o json` shows.
func ListenersJSON(ls []*listener.Listener) ([]byte, error) {
	marshal := protojson.MarshalOptions{UseProtoNames: true}
	items := make([]json.RawMessage, 0, len(ls))
	for _, l := range ls {
		raw, err := marshal.Marshal(l)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %v", l.Name, err)
		}
		items = append(items, raw)
	}
	return json.MarshalIndent(items, "", "  ")
}
