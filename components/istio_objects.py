"""The Kubernetes Gateway API gateway (gateway.api: gateway-api): the Gateway, the ConfigMap that
customises the Service istiod generates for it, and the pinned Gateway API CRDs.

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

from collections.abc import Collection, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from components.config import (
    GATEWAY_API_ISTIO_LINE,
    GATEWAY_API_VERSION,
    GATEWAY_SERVICE_PORTS,
    ConfigError,
    StackConfig,
)

GATEWAY_API_GROUP = "gateway.networking.k8s.io"
GATEWAY_CLASS = "istio"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
SERVICE_TYPE_ANNOTATION = "networking.istio.io/service-type"
# The Kubernetes provider's await (pulumi-kubernetes 4.18 and later): the Gateway is created when
# istiod reports it Programmed, within the Helm releases' default timeout.
GATEWAY_AWAIT_ANNOTATIONS = {"pulumi.com/waitFor": "condition=Programmed", "pulumi.com/timeoutSeconds": "300"}
PINNED_INSTALL = (
    Path(__file__).resolve().parent
    / "istio_mesh"
    / "pinned"
    / f"gateway-api-{GATEWAY_API_VERSION}-standard-install.yaml"
)


def uses_gateway_api(config: StackConfig) -> bool:
    return config.gateway.api == "gateway-api"


def generated_name(config: StackConfig) -> str:
    """The name istiod gives the generated Deployment, Service and ServiceAccount."""
    return f"{config.istio.gateway_name}-{GATEWAY_CLASS}"


def object_name_prefix(config: StackConfig) -> str:
    """The prefix of the stack's Istio objects' names (EnvoyFilters, AuthorizationPolicies). A
    Gateway API gateway's are named after its generated workload, so that switching gateway.api
    creates them beside the other mode's, which keep serving the old gateway until HAProxy has
    moved and are deleted at the end of the update, instead of being rewritten in place under it."""
    return generated_name(config) if uses_gateway_api(config) else config.istio.gateway_name


def generated_pod_labels(config: StackConfig) -> dict[str, str]:
    """Labels istiod's kube-gateway template puts on the generated pods."""
    return {
        GATEWAY_NAME_LABEL: config.istio.gateway_name,
        "gateway.networking.k8s.io/gateway-class-name": GATEWAY_CLASS,
        "gateway.istio.io/managed": "istio.io-gateway-controller",
    }


def gateway_target_refs(config: StackConfig) -> list[dict[str, str]]:
    """How Istio objects attach to the Gateway: a selector on its pods is ineffective (IST0166)."""
    return [{"group": GATEWAY_API_GROUP, "kind": "Gateway", "name": config.istio.gateway_name}]


def workload_attachment(config: StackConfig, selector_key: str) -> dict[str, Any]:
    """The spec fields that attach an Istio object to our gateway: `targetRefs` to the Gateway, or
    with the gateway chart a selector on its pod labels (`selector_key` is the kind's field name:
    `workloadSelector` for an EnvoyFilter, `selector` for an AuthorizationPolicy)."""
    if uses_gateway_api(config):
        return {"targetRefs": gateway_target_refs(config)}
    labels = dict(config.istio.gateway_labels)
    return {selector_key: {"labels": labels} if selector_key == "workloadSelector" else {"matchLabels": labels}}


def gateway_envoy_filter(config: StackConfig, name: str, patches: list[dict[str, Any]]) -> dict[str, Any]:
    """An EnvoyFilter of ours on the gateway, attached the way this gateway kind wants."""
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": name, "namespace": config.istio.namespace},
        "spec": {**workload_attachment(config, "workloadSelector"), "configPatches": patches},
    }


def parameters_name(config: StackConfig) -> str:
    return f"{config.istio.gateway_name}-gateway-parameters"


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
    # Imported here: proxy_protocol.py attaches its EnvoyFilter with workload_attachment above.
    from components.proxy_protocol.envoy_filter import gateway_pod_annotations

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
    """The ConfigMap the Gateway's parametersRef names: an overlay of the generated Service."""
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
        "data": {"service": yaml.safe_dump({"spec": service_spec}, sort_keys=False)},
    }


@lru_cache(maxsize=1)
def _pinned_install() -> tuple[dict[str, Any], ...]:
    return tuple(doc for doc in yaml.safe_load_all(PINNED_INSTALL.read_text()) if doc)


def gateway_api_install(config: StackConfig) -> list[dict[str, Any]]:
    """The Gateway API standard-channel objects to install (istio.install: true), else nothing.

    The project's pinned copy of sigs.k8s.io/gateway-api's config/crd/standard at
    GATEWAY_API_VERSION (`make gateway-api-crds` writes it from the Go module).
    """
    if not uses_gateway_api(config) or not config.istio.install:
        return []
    return [dict(obj) for obj in _pinned_install()]


def required_crds(config: StackConfig) -> list[str]:
    """The CRDs an adopted cluster (istio.install: false) must already have for this stack."""
    if not uses_gateway_api(config):
        return []
    kinds = ["gatewayclasses", "gateways", "httproutes"]
    if config.gateway.https_tls_mode == "Passthrough":
        kinds.append("tlsroutes")
    return [f"{kind}.{GATEWAY_API_GROUP}" for kind in kinds]


def check_required_crds(config: StackConfig, served_versions: Mapping[str, Collection[str]]) -> None:
    """Refuse an adopted cluster (istio.install: false) that lacks a Gateway API CRD this stack needs,
    or whose Gateway CRD does not serve the v1 our Gateway is written in (Gateway API before v1.0).

    `served_versions`: each required CRD the cluster has, with the versions it serves (the cluster
    read is resources/gateway_api.py's); one a CRD the cluster lacks is absent. Raises ConfigError.
    """
    if config.istio.install:
        return
    required = required_crds(config)
    missing = [crd for crd in required if crd not in served_versions]
    line = f"{GATEWAY_API_ISTIO_LINE[0]}.{GATEWAY_API_ISTIO_LINE[1]}"
    if missing:
        raise ConfigError(
            "gateway.api",
            "gateway-api needs the Gateway API CRDs, which source-ip-edge:istio.install: false "
            "leaves to you, and the cluster "
            f"lacks {', '.join(missing)}: install the standard channel of the Gateway API release your Istio supports "
            f"({GATEWAY_API_VERSION} for Istio {line}) before `pulumi up`",
        )
    gateways = f"gateways.{GATEWAY_API_GROUP}"
    if gateways in served_versions and "v1" not in served_versions[gateways]:
        raise ConfigError(
            "gateway.api",
            f"gateway-api writes a {GATEWAY_API_GROUP}/v1 Gateway, and the cluster's {gateways} serves only "
            f"{', '.join(sorted(served_versions[gateways])) or 'no version'} (Gateway API before v1.0); with "
            f"source-ip-edge:istio.install: false upgrade the CRDs to the standard channel your Istio supports "
            f"({GATEWAY_API_VERSION} for Istio {line})",
        )
