"""The trusted-peer lock: on the listeners that parse a PROXY header, only the HAProxy hosts may be
the direct peer. A network RBAC filter first in each filter chain, as an EnvoyFilter on the
gateway. Pure: imports nothing from pulumi."""

from __future__ import annotations

from typing import Any

from components.config import StackConfig
from components.istio_objects import gateway_envoy_filter, object_name_prefix
from components.proxy_protocol.envoy_filter import exposed_proxy_listener_ports

NETWORK_RBAC_FILTER = "envoy.filters.network.rbac"
NETWORK_RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"


def trusted_peer_filter_name(config: StackConfig) -> str:
    return f"{object_name_prefix(config)}-trusted-peers"


def trusted_peer_filter(config: StackConfig) -> dict[str, Any] | None:
    """The trusted-peer lock, or None without access.trustedPeers.

    Second lock behind the firewall: anyone who reaches the NodePorts could forge a PROXY header,
    so on the listeners that parse one only HAProxy may be the direct peer (needs
    externalTrafficPolicy: Local). Other listeners of the gateway are left alone.

    An EnvoyFilter rather than an AuthorizationPolicy with `to.operation.ports`: the proxy_protocol
    listener filter restores the local address from the header (Envoy proxy_protocol.cc
    restoreLocalAddress) and RBAC's destination_port reads it, so a forger would pick a port
    outside the list. `match.listener.portNumber` is the port the listener is bound to.
    """
    peers = config.access.trusted_peers
    if not peers:
        return None
    rbac = {
        "@type": NETWORK_RBAC_TYPE,
        "stat_prefix": "source_ip_edge_trusted_peers",
        "rules": {
            "action": "DENY",
            "policies": {
                "direct-peer-not-trusted": {
                    "permissions": [{"any": True}],
                    "principals": [
                        {
                            "not_id": {
                                "or_ids": {
                                    "ids": [
                                        {
                                            "direct_remote_ip": {
                                                "address_prefix": str(n.network_address),
                                                "prefix_len": n.prefixlen,
                                            }
                                        }
                                        for n in peers
                                    ]
                                }
                            }
                        }
                    ],
                }
            },
        },
    }
    patches = [
        {
            # Every filter chain of the listener (HTTP, TLS-terminated, passthrough), first, so the
            # connection is refused before anything reads it.
            "applyTo": "NETWORK_FILTER",
            "match": {"context": "GATEWAY", "listener": {"portNumber": port}},
            "patch": {"operation": "INSERT_FIRST", "value": {"name": NETWORK_RBAC_FILTER, "typed_config": rbac}},
        }
        for port in exposed_proxy_listener_ports(config)
    ]
    return gateway_envoy_filter(config, trusted_peer_filter_name(config), patches)
