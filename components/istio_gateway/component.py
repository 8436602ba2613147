"""IstioGateway: the ingress gateway HAProxy sends to: the gateway chart's release, or with
gateway.api: gateway-api a Gateway (and its Service overlay) that istiod deploys; nothing for an
adopted gateway."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.config import StackConfig
from components.custom_resource import custom_resource
from components.istio_gateway.chart import gateway_release
from components.istio_gateway.gateway_api import gateway, gateway_parameters
from components.istio_gateway.placement import gateway_daemonset_patch
from components.istio_mesh.component import helm_release


class IstioGatewayArgs(TypedDict):
    config: StackConfig
    """The validated stack configuration."""
    provider: k8s.Provider | None
    """Kubernetes provider; None uses the ambient kubeconfig."""
    after: Sequence[pulumi.Resource]
    """What the gateway's pods must find in place when they start: the control plane, and the
    EnvoyFilter that owns their PROXY listener filters."""
    previous_parent: pulumi.Resource
    """The IstioMesh these resources were children of in earlier versions of the edge: their aliases,
    so that existing stacks keep the same objects (no replacement) under this component."""


class IstioGateway(pulumi.ComponentResource):
    resources: list[pulumi.Resource]
    """The gateway's release (and with gateway.nodeNames its DaemonSet's update strategy), or its
    ConfigMap overlay then its Gateway; empty when adopted."""

    def __init__(self, name: str, args: IstioGatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("source-ip-edge:istio:IstioGateway", name, {}, opts)
        config, provider, after = args["config"], args["provider"], list(args["after"])
        previous = args["previous_parent"]

        def moved(child_name: str) -> list[pulumi.Alias]:
            return [pulumi.Alias(name=f"{previous.pulumi_resource_name}-{child_name}", parent=previous)]

        self.resources = []
        release = gateway_release(config)
        if release is not None:
            self.resources.append(
                helm_release(f"{name}-{release.name}", release, provider, self, after, False, moved(release.name))
            )
            patch = gateway_daemonset_patch(config)
            if patch is not None:
                # The DaemonSet's update strategy, which the chart cannot set (placement.py).
                self.resources.append(
                    k8s.apps.v1.DaemonSetPatch(
                        f"{name}-{patch['metadata']['name']}-update-strategy",
                        metadata={**patch["metadata"], "annotations": {"pulumi.com/patchForce": "true"}},
                        spec=patch["spec"],
                        opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=self.resources[-1:]),
                    )
                )
        parameters, gateway_object = gateway_parameters(config), gateway(config)
        if parameters is not None and gateway_object is not None:
            overlay_name = parameters["metadata"]["name"]
            overlay = k8s.core.v1.ConfigMap(
                f"{name}-{overlay_name}",
                metadata=parameters["metadata"],
                data=parameters["data"],
                opts=pulumi.ResourceOptions(
                    parent=self, provider=provider, depends_on=after, aliases=moved(overlay_name)
                ),
            )
            # istiod refuses a parametersRef to a missing ConfigMap: the Gateway waits for it.
            gateway_name = f"gateway-{gateway_object['metadata']['name']}"
            gateway_opts = pulumi.ResourceOptions(
                parent=self, provider=provider, depends_on=[*after, overlay], aliases=moved(gateway_name)
            )
            self.resources += [overlay, custom_resource(f"{name}-{gateway_name}", gateway_object, gateway_opts)]
        self.register_outputs({})
