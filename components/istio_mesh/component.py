"""IstioMesh: Istio's control plane, the Helm charts base -> istiod (or nothing when Istio is
adopted); with gateway.api: gateway-api the Gateway API CRDs first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import pulumi
import pulumi_kubernetes as k8s

from components.config import StackConfig
from components.istio_mesh.gateway_api import gateway_api_crds
from components.istio_mesh.releases import HelmReleaseSpec, control_plane_releases


class IstioMeshArgs(TypedDict):
    config: StackConfig
    """The validated stack configuration."""
    provider: k8s.Provider | None
    """Kubernetes provider; None uses the ambient kubeconfig."""


class IstioMesh(pulumi.ComponentResource):
    releases: list[k8s.helm.v3.Release]
    """base then istiod (empty with istio.install: false)."""
    gateway_api_crds: list[pulumi.Resource]
    """gateway.api: gateway-api: the Gateway API CRDs (or their reads); empty otherwise."""
    control_plane: list[pulumi.Resource]
    """What Istio's objects need in the cluster: the CRDs and istiod (its webhooks validate them)."""
    namespace: str
    """The namespace of istiod and the ingress gateway."""

    def __init__(self, name: str, args: IstioMeshArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("source-ip-edge:istio:IstioMesh", name, {}, opts)
        config, provider = args["config"], args["provider"]
        self.namespace = config.istio.namespace
        # The Gateway API CRDs go in before istiod, which then starts its Gateway API controller.
        self.gateway_api_crds = gateway_api_crds(name, config, provider, self)
        self.releases = []
        for spec in control_plane_releases(config):
            after = self.releases[-1:] or self.gateway_api_crds
            self.releases.append(helm_release(f"{name}-{spec.name}", spec, provider, self, after, not self.releases))
        self.control_plane = [*self.gateway_api_crds, *self.releases]
        self.register_outputs({"namespace": self.namespace, "releases": [r.name for r in self.releases]})


def helm_release(
    resource_name: str,
    spec: HelmReleaseSpec,
    provider: k8s.Provider | None,
    parent: pulumi.Resource,
    after: Sequence[pulumi.Resource],
    create_namespace: bool,
    aliases: Sequence[pulumi.Alias] = (),
) -> k8s.helm.v3.Release:
    # helm.v3.Release rather than server-side-applied objects: istiod's webhook rewrites its
    # own configuration, which fights server-side apply.
    return k8s.helm.v3.Release(
        resource_name,
        name=spec.name,
        chart=spec.chart,
        version=spec.version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=spec.repository),
        namespace=spec.namespace,
        create_namespace=create_namespace,
        values=spec.values,
        opts=pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=list(after), aliases=list(aliases)),
    )
