"""Helm releases that install Istio: base (CRDs) -> istiod (mesh config) -> gateway (NodePort).

The in-cluster IstioOperator was removed in Istio 1.24; these three charts are the supported
install (istio.io "Install with Helm"). Pure: imports nothing from pulumi.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.config import GATEWAY_SERVICE_PORTS, StackConfig
from components.proxy_protocol.envoy_filter import gateway_pod_annotations, mesh_gateway_topology


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


def istio_releases(config: StackConfig) -> list[HelmReleaseSpec]:
    """The releases in install order; empty when Istio is adopted (install: false). No gateway chart
    with gateway.api: gateway-api: istiod deploys the Gateway's pods itself (gateway_api.py)."""
    istio = config.istio
    if not istio.install:
        return []

    def release(name: str, chart: str, values: dict[str, Any]) -> HelmReleaseSpec:
        return HelmReleaseSpec(name, chart, istio.version, istio.chart_repository, istio.namespace, values)

    releases = [
        release("istio-base", "base", {"defaultRevision": "default"}),
        release("istiod", "istiod", istiod_values(config)),
    ]
    if config.gateway.api == "istio":
        releases.append(release(istio.gateway_name, "gateway", gateway_values(config)))
    return releases


def istiod_values(config: StackConfig) -> dict[str, Any]:
    # meshConfig.defaultConfig is the ProxyConfig every proxy starts from; gatewayTopology in it
    # only affects gateways (numTrustedProxies is Envoy's xff_num_trusted_hops).
    return {"meshConfig": {"defaultConfig": {"gatewayTopology": mesh_gateway_topology(config)}}}


def gateway_values(config: StackConfig) -> dict[str, Any]:
    gateway = config.gateway
    node_port = gateway.service_type == "NodePort"

    def port(name: str, service_port: int, target_port: int, node_port_key: str) -> dict[str, Any]:
        entry = {"name": name, "port": service_port, "targetPort": target_port, "protocol": "TCP"}
        if node_port:
            entry["nodePort"] = gateway.node_ports[node_port_key]
        return entry

    return {
        "labels": dict(config.istio.gateway_labels),
        "podAnnotations": gateway_pod_annotations(config),
        "service": {
            "type": gateway.service_type,
            # Local keeps the direct peer (HAProxy) visible to the gateway and avoids a second hop.
            "externalTrafficPolicy": gateway.external_traffic_policy,
            "ports": [
                port("status-port", GATEWAY_SERVICE_PORTS["status"], 15021, "status"),
                port("http2", GATEWAY_SERVICE_PORTS["http"], gateway.target_ports["http"], "http"),
                port("https", GATEWAY_SERVICE_PORTS["https"], gateway.target_ports["https"], "https"),
            ],
        },
    }
