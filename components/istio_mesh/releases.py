"""Helm releases that install Istio's control plane: base (CRDs) -> istiod (mesh config); the
gateway chart is istio_gateway/chart.py's.

The in-cluster IstioOperator was removed in Istio 1.24; the base, istiod and gateway charts are
the supported install (istio.io "Install with Helm"). Pure: imports nothing from pulumi.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.config import StackConfig
from components.proxy_protocol.envoy_filter import mesh_gateway_topology


@dataclass(frozen=True)
class HelmReleaseSpec:
    """One Helm release, as data: what `helm install NAME CHART --version V -n NS -f values` takes."""

    name: str
    chart: str
    version: str
    repository: str
    namespace: str
    values: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "chart": self.chart,
            "version": self.version,
            "repository": self.repository,
            "namespace": self.namespace,
            "values": self.values,
        }


def control_plane_releases(config: StackConfig) -> list[HelmReleaseSpec]:
    """base then istiod; empty when Istio is adopted (install: false)."""
    istio = config.istio
    if not istio.install:
        return []
    return [
        helm_release(config, "istio-base", "base", {"defaultRevision": "default"}),
        helm_release(config, "istiod", "istiod", istiod_values(config)),
    ]


def helm_release(config: StackConfig, name: str, chart: str, values: dict[str, Any]) -> HelmReleaseSpec:
    """A release of one of Istio's charts at the pinned version, from the configured repository."""
    istio = config.istio
    return HelmReleaseSpec(name, chart, istio.version, istio.chart_repository, istio.namespace, values)


def istiod_values(config: StackConfig) -> dict[str, Any]:
    # meshConfig.defaultConfig is the ProxyConfig every proxy starts from; gatewayTopology in it
    # only affects gateways (numTrustedProxies is Envoy's xff_num_trusted_hops).
    return {"meshConfig": {"defaultConfig": {"gatewayTopology": mesh_gateway_topology(config)}}}
