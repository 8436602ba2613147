"""TrustedPeerLock: the EnvoyFilter that refuses, on the listeners HAProxy sends to, any direct peer
other than access.trustedPeers; declared once HAProxy sends PROXY (before, the gateway's direct
clients are not HAProxy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.config import StackConfig
from components.custom_resource import custom_resource
from components.trusted_peer_lock.envoy_filter import trusted_peer_filter


class TrustedPeerLockArgs(TypedDict):
    config: StackConfig
    """The validated stack configuration."""
    provider: k8s.Provider | None
    """Kubernetes provider; None uses the ambient kubeconfig."""
    after: Sequence[pulumi.Resource]
    """The HAProxy hosts: the lock goes in once they send PROXY."""
    previous_parent: pulumi.Resource
    """The SourceIpPolicy the lock was a child of in earlier versions of the edge (its alias)."""


class TrustedPeerLock(pulumi.ComponentResource):
    envoy_filter: k8s.apiextensions.CustomResource | None
    """The lock, or None without access.trustedPeers."""

    def __init__(self, name: str, args: TrustedPeerLockArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("source-ip-edge:istio:TrustedPeerLock", name, {}, opts)
        lock = trusted_peer_filter(args["config"])
        self.envoy_filter = None
        if lock is not None:
            lock_name = lock["metadata"]["name"]
            previous = args["previous_parent"]
            alias = pulumi.Alias(name=f"{previous.pulumi_resource_name}-{lock_name}", parent=previous)
            opts_ = pulumi.ResourceOptions(
                parent=self, provider=args["provider"], depends_on=list(args["after"]), aliases=[alias]
            )
            self.envoy_filter = custom_resource(f"{name}-{lock_name}", lock, opts_)
        self.register_outputs({})
