"""IstioMesh: Istio's Helm charts base -> istiod -> gateway, or nothing when Istio is adopted."""

from __future__ import annotations

from typing import Optional, TypedDict

import pulumi
import pulumi_kubernetes as k8s

from source_ip_edge.config import StackConfig
from source_ip_edge.render.istio_mesh import istio_releases


class IstioMeshArgs(TypedDict):
    config: StackConfig
    """The validated stack configuration."""
    provider: Optional[k8s.Provider]
    """Kubernetes provider; None uses the ambient kubeconfig."""


class IstioMesh(pulumi.ComponentResource):
    releases: list[k8s.helm.v3.Release]
    """The Helm releases in install order (empty with istio.install: false)."""
    namespace: str
    """The namespace of istiod and the ingress gateway."""

    def __init__(self, name: str, args: IstioMeshArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("source-ip-edge:istio:IstioMesh", name, {}, opts)
        config = args["config"]
        self.namespace = config.istio.namespace
        self.releases = []
        for spec in istio_releases(config):
            # helm.v3.Release rather than server-side-applied objects: istiod's webhook rewrites
            # its own configuration, which fights server-side apply.
            release = k8s.helm.v3.Release(
                f"{name}-{spec.name}",
                name=spec.name,
                chart=spec.chart,
                version=spec.version,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=spec.repository),
                namespace=spec.namespace,
                create_namespace=not self.releases,
                values=spec.values,
                opts=pulumi.ResourceOptions(
                    parent=self,
                    provider=args["provider"],
                    depends_on=self.releases[-1:],
                ),
            )
            self.releases.append(release)
        self.register_outputs({"namespace": self.namespace, "releases": [r.name for r in self.releases]})
