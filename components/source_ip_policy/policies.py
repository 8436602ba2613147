"""Access on the gateway by address: AuthorizationPolicies on the visitor's address (the
trusted-peer lock on the direct peer is trusted_peer_lock/'s).

remoteIpBlocks is the address Envoy derived from the PROXY header (or trusted X-Forwarded-For);
ipBlocks is the direct peer, i.e. HAProxy or a node. Pure: imports nothing from pulumi.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from components.config import MAX_POLICY_CIDR_BYTES, StackConfig
from components.istio_objects import object_name_prefix, workload_attachment


def authorization_policies(config: StackConfig) -> list[dict[str, Any]]:
    """DENY policies, then ALLOW policies, for the lists enforced at the gateway. A list too long for
    one object is split across several (shard_networks): DENY policies add up (any match denies),
    and ALLOW policies are alternatives (a match in any allows), so the split changes nothing."""
    access = config.access
    policies = []
    # Workload-wide, not per port: RBAC's destination port is the PROXY header's (HAProxy's bind), not the listener's.
    if access.at_gateway("deny"):
        policies += _split_policies(config, "source-ip-deny", "DENY", access.deny_blocks)
    if access.at_gateway("allow"):
        # With any ALLOW policy on a workload, requests that match none are denied.
        policies += _split_policies(config, "source-ip-allow", "ALLOW", access.allow_blocks)
    return policies


def shard_networks(networks: Sequence[Any], limit: int = MAX_POLICY_CIDR_BYTES) -> list[list[str]]:
    """The networks (as strings) in shards of at most `limit` bytes as JSON, for one policy each.

    One shard when they fit: the single policy of a short list, under its name of old. Otherwise
    2, 4, 8 ... shards, a network going to the shard its own hash picks, so a shard's content
    depends only on the shard count and on which networks hash to it: adding or removing one
    network changes one policy (two when merging turns a network and its neighbour into their
    supernet), never the others. The count is the smallest power of two that leaves each shard
    half full on average (room to grow before the next split) and none over the limit; on a
    doubling each shard splits in two (the hash's next bit), which is the only time every policy
    changes. Sorted ranges would keep neighbours together, but their boundaries move as ranges
    fill, or stay fixed and fill unevenly: feeds cluster in a few parts of the address space.
    """
    texts = [str(network) for network in networks]
    size = sum(len(text) + 3 for text in texts)  # as JSON: the quoted string and a comma
    if size <= limit:
        return [texts]
    hashes = [int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") for text in texts]
    count = 2
    while True:
        if size <= count * limit // 2:
            shards: list[list[str]] = [[] for _ in range(count)]
            sizes = [0] * count
            for text, value in zip(texts, hashes, strict=True):
                shards[value % count].append(text)
                sizes[value % count] += len(text) + 3
            if max(sizes) <= limit:
                return shards
        count *= 2


def _split_policies(config: StackConfig, suffix: str, action: str, networks: Sequence[Any]) -> list[dict[str, Any]]:
    shards = shard_networks(networks)
    if len(shards) == 1:
        names = [suffix]
    else:
        width = len(str(len(shards) - 1))
        names = [f"{suffix}-{len(shards)}-{i:0{width}d}" for i in range(len(shards))]
    return [
        _policy(config, name, action, [{"from": [{"source": {"remoteIpBlocks": shard}}]}])
        for name, shard in zip(names, shards, strict=True)
        # An empty remoteIpBlocks would be no condition at all: a shard without networks has no policy.
        if shard
    ]


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
