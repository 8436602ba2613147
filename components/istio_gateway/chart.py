"""The gateway chart's Helm release (gateway.api: istio, istio.install: true): the ingress gateway
Deployment (a DaemonSet on the nodes of gateway.nodeNames) and its NodePort Service with the pinned
nodePorts. Pure: imports nothing from pulumi."""

from __future__ import annotations

from typing import Any

from components.config import GATEWAY_SERVICE_PORTS, StackConfig
from components.istio_gateway.placement import gateway_placement_values
from components.istio_mesh.releases import HelmReleaseSpec, helm_release
from components.proxy_protocol.envoy_filter import gateway_pod_annotations


def gateway_release(config: StackConfig) -> HelmReleaseSpec | None:
    """None for an adopted Istio, and with gateway.api: gateway-api (istiod deploys the Gateway's
    pods itself: gateway_api.py)."""
    if not config.istio.install or config.gateway.api != "istio":
        return None
    return helm_release(config, config.istio.gateway_name, "gateway", gateway_values(config))


def gateway_values(config: StackConfig) -> dict[str, Any]:
    gateway = config.gateway
    node_port = gateway.service_type == "NodePort"

    def port(name: str, service_port: int, target_port: int, node_port_key: str) -> dict[str, Any]:
        entry = {"name": name, "port": service_port, "targetPort": target_port, "protocol": "TCP"}
        if node_port:
            entry["nodePort"] = gateway.node_ports[node_port_key]
        return entry

    return {
        **gateway_placement_values(config),
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
