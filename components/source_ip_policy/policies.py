"""Access on the gateway by address: AuthorizationPolicies on the visitor's address (the
trusted-peer lock on the direct peer is trusted_peer_lock/'s).

remoteIpBlocks is the address Envoy derived from the PROXY header (or trusted X-Forwarded-For);
ipBlocks is the direct peer, i.e. HAProxy or a node. Pure: imports nothing from pulumi.
"""

from __future__ import annotations

from typing import Any

from components.config import StackConfig
from components.istio_objects import object_name_prefix, workload_attachment


def authorization_policies(config: StackConfig) -> list[dict[str, Any]]:
    access = config.access
    policies = []
    # Workload-wide, not per port: RBAC's destination port is the PROXY header's (HAProxy's bind), not the listener's.
    if access.deny:
        policies.append(
            _policy(
                config,
                "source-ip-deny",
                "DENY",
                [{"from": [{"source": {"remoteIpBlocks": _cidrs(access.deny_blocks)}}]}],
            )
        )
    if access.allow:
        # With any ALLOW policy on a workload, requests that match none are denied.
        policies.append(
            _policy(
                config,
                "source-ip-allow",
                "ALLOW",
                [{"from": [{"source": {"remoteIpBlocks": _cidrs(access.allow_blocks)}}]}],
            )
        )
    return policies


def policy_names(config: StackConfig) -> list[str]:
    return [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in authorization_policies(config)]


def _policy(config: StackConfig, suffix: str, action: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    istio = config.istio
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": f"{object_name_prefix(config)}-{suffix}", "namespace": istio.namespace},
        "spec": {
            # targetRefs for a Gateway API gateway: a selector on its pods is ineffective (IST0166).
            **workload_attachment(config, "selector"),
            "action": action,
            "rules": rules,
        },
    }


def _cidrs(networks) -> list[str]:
    return [str(network) for network in networks]
