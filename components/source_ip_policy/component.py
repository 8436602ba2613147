"""SourceIpPolicy: AuthorizationPolicies on the gateway by the visitor's (PROXY-derived) address,
and the trusted-peer lock on the listeners HAProxy sends to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.config import StackConfig
from components.custom_resource import custom_resource
from components.source_ip_policy.policies import authorization_policies, trusted_peer_filter


class SourceIpPolicyArgs(TypedDict):
    config: StackConfig
    """The validated stack configuration."""
    provider: k8s.Provider | None
    """Kubernetes provider; None uses the ambient kubeconfig."""
    policies_after: Sequence[pulumi.Resource]
    """The AuthorizationPolicies go in after these: HAProxy too for the gateway chart (a live
    gateway's clients keep their direct path until HAProxy sends PROXY); the Gateway for a
    Gateway API gateway, whose pods get no traffic before HAProxy moves to them, so that they never
    serve a visitor without the allow and deny lists."""


class SourceIpPolicy(pulumi.ComponentResource):
    policies: list[k8s.apiextensions.CustomResource]
    """The AuthorizationPolicies, DENY before ALLOW."""
    trusted_peer_lock: k8s.apiextensions.CustomResource | None
    """The EnvoyFilter that refuses direct peers other than access.trustedPeers, if any."""

    def __init__(self, name: str, args: SourceIpPolicyArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("source-ip-edge:istio:SourceIpPolicy", name, {}, opts)
        self._name, self._args = name, args
        policy_opts = pulumi.ResourceOptions(
            parent=self, provider=args["provider"], depends_on=list(args["policies_after"])
        )
        self.policies = [
            custom_resource(f"{name}-{policy['metadata']['name']}", policy, policy_opts)
            for policy in authorization_policies(args["config"])
        ]
        self.trusted_peer_lock = None

    def lock_after(self, hosts: Sequence[pulumi.Resource]) -> None:
        """The trusted-peer lock, once HAProxy sends PROXY (before, the gateway's direct clients are
        not HAProxy): a second step, because a Gateway API gateway's HAProxy hosts wait for the
        policies above, and the lock waits for the hosts."""
        lock = trusted_peer_filter(self._args["config"])
        if lock:
            opts = pulumi.ResourceOptions(parent=self, provider=self._args["provider"], depends_on=list(hosts))
            self.trusted_peer_lock = custom_resource(f"{self._name}-{lock['metadata']['name']}", lock, opts)
        self.register_outputs({"policies": [p.metadata["name"] for p in self.policies]})
