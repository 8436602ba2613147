"""How the gateway learns to read the PROXY header: an EnvoyFilter, or Istio's native field.

The gateway pods always start with Istio's native parser (Istio >= 1.19); in envoyfilter mode the
EnvoyFilter owns the PROXY listener filters: it removes every proxy_protocol filter, the native one
included, and inserts its own on the ports HAProxy sends to. So a listener never parses the header
twice, and switching the mode only adds or deletes the EnvoyFilter, which istiod pushes to each
running pod as one listener update: no pod roll, no moment with zero or two parsers.
Pure: imports nothing from pulumi.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from components.config import NATIVE_PROXY_PROTOCOL_SINCE, StackConfig
from components.istio_objects import gateway_envoy_filter, object_name_prefix

PROXY_PROTOCOL_FILTER = "envoy.filters.listener.proxy_protocol"
PROXY_PROTOCOL_TYPE = "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"
ROLL_ANNOTATION = "source-ip-edge/proxy-protocol-hash"
PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"


def envoy_filter_name(config: StackConfig) -> str:
    return f"{object_name_prefix(config)}-proxy-protocol"


def listener_ports(config: StackConfig) -> list[int]:
    """The gateway's Envoy listener ports that HAProxy sends to (container ports, not NodePorts)."""
    used = {frontend.gateway_port for frontend in config.haproxy.frontends}
    return sorted({config.gateway.target_ports[name] for name in used})


def exposed_proxy_listener_ports(config: StackConfig) -> list[int]:
    """Listeners that parse a PROXY header and that the gateway Service exposes (NodePort or LB):
    where anyone who reaches the Service could forge the visitor's address."""
    if config.proxy_protocol.mode == "native":
        # The native field parses PROXY on every listener of the gateway, all or nothing.
        return sorted(set(config.gateway.target_ports.values()))
    return listener_ports(config)


def envoy_filter(config: StackConfig) -> dict[str, Any] | None:
    """The EnvoyFilter for mode envoyfilter, else None."""
    if config.proxy_protocol.mode != "envoyfilter":
        return None
    typed_config: dict[str, Any] = {"@type": PROXY_PROTOCOL_TYPE}
    if not config.proxy_protocol.strict:
        # Migration window: connections without a header are still served (Envoy v3 API field).
        typed_config["allow_requests_without_proxy_protocol"] = True
    remove_every_proxy_protocol_filter = {
        # First, on every listener of the gateway: Istio's native parser (which the pods always
        # carry) and any other, so that each listener ends with exactly the one inserted below.
        # Patches of one EnvoyFilter apply in order (istiod envoyfilter/listener_patch.go).
        "applyTo": "LISTENER_FILTER",
        "match": {"context": "GATEWAY", "listener": {"listenerFilter": PROXY_PROTOCOL_FILTER}},
        "patch": {"operation": "REMOVE"},
    }
    patches = [remove_every_proxy_protocol_filter] + [
        {
            # LISTENER_FILTER + INSERT_FIRST (Istio >= 1.17) puts proxy_protocol before the
            # tls_inspector Istio adds for SNI. The blog's LISTENER + MERGE of listener_filters
            # appends instead, so tls_inspector would read the PROXY header and TLS breaks
            # (istiod envoyfilter/listener_patch.go). Name-only filters without typed_config
            # are rejected since Istio 1.19.
            "applyTo": "LISTENER_FILTER",
            "match": {"context": "GATEWAY", "listener": {"portNumber": port}},
            "patch": {
                "operation": "INSERT_FIRST",
                "value": {"name": PROXY_PROTOCOL_FILTER, "typed_config": typed_config},
            },
        }
        # Scoped to the ports HAProxy sends to: other listeners of this gateway keep working
        # for clients that send no header.
        for port in listener_ports(config)
    ]
    return gateway_envoy_filter(config, envoy_filter_name(config), patches)


def gateway_topology(config: StackConfig) -> dict[str, Any]:
    """ProxyConfig.gatewayTopology of the gateway pods, whichever the mode."""
    # 0 behind a TCP-mode HAProxy: nothing in front appends X-Forwarded-For (config.py refuses more
    # unless istio.httpProxiesInFront says real L7 proxies do).
    topology: dict[str, Any] = {"numTrustedProxies": config.istio.trusted_proxy_hops}
    if config.istio.at_least(NATIVE_PROXY_PROTOCOL_SINCE):
        # Istio's native parser (strict, every listener) in both modes: ProxyConfig is read at pod
        # start, so a mode that changed it would need a roll during which old and new pods differ;
        # in envoyfilter mode the EnvoyFilter replaces it (see the module docstring).
        topology["proxyProtocol"] = {}
    return topology


def mesh_gateway_topology(config: StackConfig) -> dict[str, Any]:
    """meshConfig.defaultConfig.gatewayTopology: what every gateway of an installed mesh starts from.

    Our gateway's pods override it with their annotation; the mesh-wide PROXY parser stays what
    native mode has always set, so other gateways of the mesh see no change.
    """
    topology: dict[str, Any] = {"numTrustedProxies": config.istio.trusted_proxy_hops}
    if config.proxy_protocol.mode == "native":
        topology["proxyProtocol"] = {}
    return topology


def proxy_protocol_hash(config: StackConfig) -> str:
    """A digest of the gateway pods' ProxyConfig.

    ProxyConfig is read at pod start only, so a change must roll the pods; the digest goes into
    the pod template, and Kubernetes does a rolling update when it changes. The EnvoyFilter is not
    in it: istiod pushes EnvoyFilter changes to running pods.
    """
    material = {"gatewayTopology": gateway_topology(config)}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def gateway_pod_annotations(config: StackConfig) -> dict[str, str]:
    """Pod-template annotations for the gateway Deployment: the roll digest and the ProxyConfig.

    The ProxyConfig goes on the pods (installed or adopted gateway) rather than only in the mesh
    config: it then changes together with the pod template, never under pods already running.
    The annotation replaces the whole gatewayTopology, so it carries numTrustedProxies too.
    """
    return {
        ROLL_ANNOTATION: proxy_protocol_hash(config),
        PROXY_CONFIG_ANNOTATION: json.dumps({"gatewayTopology": gateway_topology(config)}, sort_keys=True),
    }


def gateway_deployment_patch(config: StackConfig) -> dict[str, Any] | None:
    """For an adopted Istio (install: false): a server-side-apply patch of the gateway Deployment
    that sets our pod annotations and so rolls the pods when they change. None for a Gateway API
    gateway: the Gateway's spec.infrastructure.annotations carry them, and istiod rolls its pods."""
    if config.istio.install or config.gateway.api == "gateway-api":
        return None
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": config.istio.gateway_name, "namespace": config.istio.namespace},
        "spec": {"template": {"metadata": {"annotations": gateway_pod_annotations(config)}}},
    }
