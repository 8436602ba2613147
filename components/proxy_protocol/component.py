"""ProxyProtocol: the gateway reads the PROXY header (EnvoyFilter or native) and rolls on change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.config import StackConfig
from components.custom_resource import custom_resource
from components.istio_objects import uses_gateway_api
from components.proxy_protocol.envoy_filter import envoy_filter, gateway_deployment_patch


class ProxyProtocolArgs(TypedDict):
    config: StackConfig
    """The validated stack configuration."""
    provider: k8s.Provider | None
    """Kubernetes provider; None uses the ambient kubeconfig."""
    control_plane: Sequence[pulumi.Resource]
    """Istio's CRDs and istiod, which the EnvoyFilter needs (nothing for an adopted Istio). The
    installed gateway waits for this component, so its pods start with their PROXY filters right."""


class ProxyProtocol(pulumi.ComponentResource):
    resources: list[pulumi.CustomResource]
    """What the gateway needs to accept PROXY headers; HAProxy waits for these."""

    def __init__(self, name: str, args: ProxyProtocolArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("source-ip-edge:istio:ProxyProtocol", name, {}, opts)
        config = args["config"]
        child_opts = pulumi.ResourceOptions(
            parent=self, provider=args["provider"], depends_on=list(args["control_plane"])
        )
        self.resources = []
        filter_object = envoy_filter(config)
        if filter_object is not None:
            # A Gateway API gateway's EnvoyFilter is another resource, not the chart's renamed: a
            # rename would be a replacement whose pending delete, after a failed gateway.api switch
            # and the update back, deletes the object of the same name the update just made again.
            suffix = "-gateway-api-envoyfilter" if uses_gateway_api(config) else "-envoyfilter"
            self.resources.append(custom_resource(f"{name}{suffix}", filter_object, child_opts))
        patch = gateway_deployment_patch(config)
        if patch is not None:
            # Adopted gateway: patch only its pod annotations (server-side apply, field manager
            # owns nothing else), which both configures and rolls the pods.
            self.resources.append(
                k8s.apps.v1.DeploymentPatch(
                    f"{name}-gateway-roll",
                    metadata={**patch["metadata"], "annotations": {"pulumi.com/patchForce": "true"}},
                    spec=patch["spec"],
                    opts=pulumi.ResourceOptions.merge(
                        child_opts,
                        pulumi.ResourceOptions(depends_on=self.resources[:1]),
                    ),
                )
            )
        self.register_outputs({"mode": config.proxy_protocol.mode, "strict": config.proxy_protocol.strict})
