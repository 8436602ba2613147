"""SourceIpPolicy: AuthorizationPolicies on the gateway by the visitor's (PROXY-derived) address."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.config import StackConfig
from components.custom_resource import custom_resource
from components.source_ip_policy.policies import authorization_policies


class SourceIpPolicyArgs(TypedDict):
    config: StackConfig
    """The validated stack configuration."""
    provider: k8s.Provider | None
    """Kubernetes provider; None uses the ambient kubeconfig."""
    after: Sequence[pulumi.Resource]
    """What the policies wait for (the edge's composition says which, and why)."""


class SourceIpPolicy(pulumi.ComponentResource):
    policies: list[k8s.apiextensions.CustomResource]
    """The AuthorizationPolicies, DENY before ALLOW."""
    names: list[str]
    """Their `namespace/name`s, in the same order (the stack output `authorizationPolicies`)."""

    def __init__(self, name: str, args: SourceIpPolicyArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("source-ip-edge:istio:SourceIpPolicy", name, {}, opts)
        policy_opts = pulumi.ResourceOptions(parent=self, provider=args["provider"], depends_on=list(args["after"]))
        manifests = authorization_policies(args["config"])
        self.policies = [custom_resource(f"{name}-{m['metadata']['name']}", m, policy_opts) for m in manifests]
        self.names = [f"{m['metadata']['namespace']}/{m['metadata']['name']}" for m in manifests]
        self.register_outputs({"policies": [m["metadata"]["name"] for m in manifests]})
