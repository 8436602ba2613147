"""IstioMesh: Istio's Helm charts base -> istiod -> gateway, or nothing when Istio is adopted; with
gateway.api: gateway-api the Gateway API CRDs first and a Gateway instead of the gateway chart."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.config import StackConfig
from components.istio_mesh.gateway_api import gateway_api_crds, gateway_api_gateway
from components.istio_mesh.releases import HelmReleaseSpec, istio_releases


class IstioMeshArgs(TypedDict):
    config: StackConfig
    """The validated stack configuration."""
    provider: k8s.Provider | None
    """Kubernetes provider; None uses the ambient kubeconfig."""
    before_gateway: Callable[[Sequence[pulumi.Resource]], Sequence[pulumi.Resource]]
    """Declares what the gateway's pods must find in place when they start, given the control plane
    it needs (base and istiod; nothing for an adopted Istio), and returns it for the gateway release
    to wait on. SourceIpEdge declares the ProxyProtocol there: its EnvoyFilter needs istiod, and
    gateway pods must never start before the EnvoyFilter that owns their PROXY listener filters."""


class IstioMesh(pulumi.ComponentResource):
    releases: list[k8s.helm.v3.Release]
    """The Helm releases in install order (empty with istio.install: false)."""
    gateway_api: list[pulumi.Resource]
    """gateway.api: gateway-api: the Gateway API CRDs (or their reads), the Service overlay
    ConfigMap and the Gateway; empty otherwise."""
    namespace: str
    """The namespace of istiod and the ingress gateway."""

    def __init__(self, name: str, args: IstioMeshArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("source-ip-edge:istio:IstioMesh", name, {}, opts)
        config = args["config"]
        self.namespace = config.istio.namespace
        self.releases = []
        specs = istio_releases(config)
        control_plane = [spec for spec in specs if spec.chart != "gateway"]
        gateway = [spec for spec in specs if spec.chart == "gateway"]
        # The Gateway API CRDs go in before istiod, which then starts its Gateway API controller.
        crds = gateway_api_crds(name, config, args["provider"], self)
        for spec in control_plane:
            self.releases.append(self._release(name, spec, args["provider"], self.releases[-1:] or crds))
        gateway_after = list(args["before_gateway"](list(self.releases) + crds))
        for spec in gateway:
            self.releases.append(self._release(name, spec, args["provider"], self.releases[-1:] + gateway_after))
        self.gateway_api = crds + gateway_api_gateway(
            name, config, args["provider"], self, self.releases[-1:] + crds + gateway_after
        )
        self.register_outputs({"namespace": self.namespace, "releases": [r.name for r in self.releases]})

    def _release(
        self, name: str, spec: HelmReleaseSpec, provider: k8s.Provider | None, after: Sequence[pulumi.Resource]
    ) -> k8s.helm.v3.Release:
        # helm.v3.Release rather than server-side-applied objects: istiod's webhook rewrites its
        # own configuration, which fights server-side apply.
        return k8s.helm.v3.Release(
            f"{name}-{spec.name}",
            name=spec.name,
            chart=spec.chart,
            version=spec.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=spec.repository),
            namespace=spec.namespace,
            create_namespace=not self.releases,
            values=spec.values,
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=list(after)),
        )
