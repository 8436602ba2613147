"""The Kubernetes Gateway API gateway (gateway.api: gateway-api): the Gateway and the ConfigMap that
customises the Service istiod generates for it.

For a Gateway with `gatewayClassName: istio`, istiod's deployment controller generates its
Deployment, Service and ServiceAccount (named `<gateway>-istio`) from the `kube-gateway` template
(pilot/pkg/config/kube/gatewaycommon/deploymentcontroller.go):
  - `spec.infrastructure.annotations` go onto the generated pods, so `proxy.istio.io/config` there
    is the pods' ProxyConfig (native PROXY, numTrustedProxies) and a change of it rolls them;
  - the `networking.istio.io/service-type` annotation sets the Service's type;
  - the ConfigMap `spec.infrastructure.parametersRef` names is a strategic-merge overlay of the
    generated objects (key `service`): here the pinned nodePorts and externalTrafficPolicy. A
    per-Gateway ConfigMap rather than the class-wide `gateway.istio.io/defaults-for-class` one, so
    other Gateways of the class are left alone.
Each listener's port is both the Service port and Envoy's listener port (the template sets no
targetPort). Pure: imports nothing from pulumi.
"""

from __future__ import annotations

from typing import Any

import yaml

from components.config import GATEWAY_SERVICE_PORTS, StackConfig
from components.istio_gateway.placement import gateway_api_placement_overlays
from components.istio_objects import (
    GATEWAY_API_GROUP,
    GATEWAY_CLASS,
    GATEWAY_NAME_LABEL,
    parameters_name,
    uses_gateway_api,
)
from components.proxy_protocol.envoy_filter import gateway_pod_annotations

SERVICE_TYPE_ANNOTATION = "networking.istio.io/service-type"
# The Kubernetes provider's await (pulumi-kubernetes 4.18 and later): the Gateway is created when
# istiod reports it Programmed, within the Helm releases' default timeout.
GATEWAY_AWAIT_ANNOTATIONS = {"pulumi.com/waitFor": "condition=Programmed", "pulumi.com/timeoutSeconds": "300"}


def _listener_ports(config: StackConfig) -> dict[str, int]:
    """Gateway listener per gateway port HAProxy forwards to: name -> port."""
    used = {frontend.gateway_port for frontend in config.haproxy.frontends}
    return {name: config.gateway.target_ports[name] for name in ("http", "https") if name in used}


def _allowed_routes(config: StackConfig) -> dict[str, Any]:
    namespaces: dict[str, Any] = {"from": config.gateway.allowed_route_namespaces}
    if config.gateway.allowed_route_namespaces == "Selector":
        namespaces["selector"] = {"matchLabels": dict(config.gateway.allowed_route_labels)}
    return {"namespaces": namespaces}


def _listener(config: StackConfig, name: str, port: int) -> dict[str, Any]:
    listener: dict[str, Any] = {"name": name, "port": port, "protocol": "HTTP"}
    if name == "https":
        if config.gateway.https_tls_mode == "Passthrough":
            # TLS passes through untouched, as HAProxy passes it: applications attach TLSRoutes by SNI.
            listener.update(protocol="TLS", tls={"mode": "Passthrough"})
        else:
            refs = [
                {"group": "", "kind": "Secret", "name": secret} for secret in config.gateway.https_certificate_secrets
            ]
            listener.update(protocol="HTTPS", tls={"mode": "Terminate", "certificateRefs": refs})
    listener["allowedRoutes"] = _allowed_routes(config)
    return listener


def gateway(config: StackConfig) -> dict[str, Any] | None:
    """The Gateway, or None with gateway.api: istio."""
    if not uses_gateway_api(config):
        return None
    istio = config.istio
    return {
        "apiVersion": f"{GATEWAY_API_GROUP}/v1",
        "kind": "Gateway",
        "metadata": {
            "name": istio.gateway_name,
            "namespace": istio.namespace,
            "annotations": {
                SERVICE_TYPE_ANNOTATION: config.gateway.service_type,
                # `pulumi up` waits until istiod has deployed it and its Service holds the pinned
                # NodePorts (a NodePort another Service holds leaves it unprogrammed), so that the
                # steps after it, HAProxy's among them, never run against a gateway that is not there.
                **GATEWAY_AWAIT_ANNOTATIONS,
            },
        },
        "spec": {
            "gatewayClassName": GATEWAY_CLASS,
            "listeners": [_listener(config, name, port) for name, port in _listener_ports(config).items()],
            "infrastructure": {
                # Onto the generated pods: their ProxyConfig, and the roll digest (see proxy_protocol.py).
                "annotations": gateway_pod_annotations(config),
                "parametersRef": {"group": "", "kind": "ConfigMap", "name": parameters_name(config)},
            },
        },
    }


def gateway_parameters(config: StackConfig) -> dict[str, Any] | None:
    """The ConfigMap the Gateway's parametersRef names: an overlay of the generated Service, and with
    gateway.nodeNames of the generated Deployment and PodDisruptionBudget (one pod per named node)."""
    if not uses_gateway_api(config):
        return None
    gateway_settings = config.gateway
    service_spec: dict[str, Any] = {
        # Local keeps the direct peer (HAProxy) visible to the gateway and avoids a second hop.
        "externalTrafficPolicy": gateway_settings.external_traffic_policy,
    }
    if gateway_settings.service_type == "NodePort":
        # Strategic merge: Service ports merge on `port`, so each entry pins one generated port's nodePort.
        ports = {GATEWAY_SERVICE_PORTS["status"]: gateway_settings.node_ports["status"]}
        for name, port in _listener_ports(config).items():
            ports[port] = gateway_settings.node_ports[name]
        service_spec["ports"] = [{"port": port, "nodePort": node_port} for port, node_port in ports.items()]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": parameters_name(config), "namespace": config.istio.namespace},
        "data": {
            "service": yaml.safe_dump({"spec": service_spec}, sort_keys=False),
            **{
                key: yaml.safe_dump(overlay, sort_keys=False)
                for key, overlay in gateway_api_placement_overlays(
                    config, {GATEWAY_NAME_LABEL: config.istio.gateway_name}
                ).items()
            },
        },
    }
