"""The stack outputs other stacks read through a StackReference. Names are a stable contract.

Pure: imports nothing from pulumi.
"""

from __future__ import annotations

from typing import Any

from source_ip_edge.config import StackConfig
from source_ip_edge.render.haproxy_host.haproxy_cfg import config_sha256
from source_ip_edge.render.proxy_protocol import envoy_filter, envoy_filter_name
from source_ip_edge.render.source_ip_policy import policy_names, trusted_peer_filter, trusted_peer_filter_name


def stack_outputs(config: StackConfig, haproxy_config: str) -> dict[str, Any]:
    """The outputs for a stack whose hosts run `haproxy_config` (the rendered haproxy.cfg)."""
    haproxy, gateway, istio = config.haproxy, config.gateway, config.istio
    ports = gateway.backend_ports
    return {
        "haproxyHosts": [{"name": h.name, "address": h.address, "port": h.port} for h in haproxy.hosts],
        "frontends": [
            {
                "name": f.name,
                "binds": [b.haproxy() for b in f.binds],
                "gatewayPort": f.gateway_port,
                "backendPort": ports[f.gateway_port],
                "targetPort": gateway.target_ports[f.gateway_port],
            }
            for f in haproxy.frontends
        ],
        "gatewayBackends": [
            {"address": str(node), "http": ports["http"], "https": ports["https"], "status": ports["status"]}
            for node in gateway.nodes
        ],
        "proxyProtocol": {
            "mode": config.proxy_protocol.mode,
            "strict": config.proxy_protocol.strict,
            "version": haproxy.proxy_protocol_version,
        },
        "numTrustedProxies": istio.trusted_proxy_hops,
        "envoyFilterName": f"{istio.namespace}/{envoy_filter_name(config)}" if envoy_filter(config) else None,
        "authorizationPolicies": policy_names(config),
        "trustedPeersFilterName": (
            f"{istio.namespace}/{trusted_peer_filter_name(config)}" if trusted_peer_filter(config) else None
        ),
        "access": {
            "allow": [str(n) for n in config.access.allow],
            "deny": [str(n) for n in config.access.deny],
            "trustedPeers": [str(n) for n in config.access.trusted_peers],
        },
        "haproxyConfigSha256": config_sha256(haproxy_config),
        "istioVersion": istio.version,
        "gateway": {
            "namespace": istio.namespace,
            "name": istio.gateway_name,
            "labels": dict(istio.gateway_labels),
            "managed": istio.install,
        },
    }
