"""AuthorizationPolicies on the gateway that allow or deny by the visitor's address.

remoteIpBlocks is the address Envoy derived from the PROXY header (or trusted X-Forwarded-For);
ipBlocks is the direct peer, i.e. HAProxy or a node. Pure: imports nothing from pulumi.
"""

from __future__ import annotations

from typing import Any

from source_ip_edge.config import StackConfig


def authorization_policies(config: StackConfig) -> list[dict[str, Any]]:
    access = config.access
    policies = []
    if access.deny:
        policies.append(_policy(config, "source-ip-deny", "DENY", [{"from": [{"source": {"remoteIpBlocks": _cidrs(access.deny)}}]}]))
    if access.allow:
        # With any ALLOW policy on a workload, requests that match none are denied.
        policies.append(_policy(config, "source-ip-allow", "ALLOW", [{"from": [{"source": {"remoteIpBlocks": _cidrs(access.allow)}}]}]))
    if access.trusted_peers:
        # Second lock behind the firewall: only HAProxy may be the direct peer, since anyone who
        # reaches the NodePorts could forge a PROXY header. Needs externalTrafficPolicy: Local.
        policies.append(
            _policy(config, "trusted-peers", "DENY", [{"from": [{"source": {"notIpBlocks": _cidrs(access.trusted_peers)}}]}])
        )
    return policies


def policy_names(config: StackConfig) -> list[str]:
    return [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in authorization_policies(config)]


def _policy(config: StackConfig, suffix: str, action: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    istio = config.istio
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": f"{istio.gateway_name}-{suffix}", "namespace": istio.namespace},
        "spec": {
            "selector": {"matchLabels": dict(istio.gateway_labels)},
            "action": action,
            "rules": rules,
        },
    }


def _cidrs(networks) -> list[str]:
    return [str(network) for network in networks]
