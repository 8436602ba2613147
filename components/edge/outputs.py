"""The stack outputs other stacks read through a StackReference. Names are a stable contract.

Pure: imports nothing from pulumi.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from components.config import StackConfig
from components.haproxy_host.haproxy_cfg import config_sha256
from components.istio_objects import GATEWAY_API_GROUP, generated_name, generated_pod_labels, parameters_name
from components.proxy_protocol.envoy_filter import envoy_filter, envoy_filter_name
from components.source_ip_policy.policies import policy_names
from components.trusted_peer_lock.envoy_filter import trusted_peer_filter, trusted_peer_filter_name


def stack_outputs(
    config: StackConfig, haproxy_config: str, authorization_policies: Sequence[str] | None = None
) -> dict[str, Any]:
    """The outputs for a stack whose hosts run `haproxy_config` (the rendered haproxy.cfg).
    `authorization_policies`: their `namespace/name`s where the caller has rendered them already (a
    long list is split across many, and rendering them again would double the work)."""
    haproxy, gateway, istio = config.haproxy, config.gateway, config.istio
    ports = gateway.backend_ports
    return {
        "haproxyHosts": [{"name": h.name, "address": h.address, "port": h.port} for h in haproxy.hosts],
        "vip": _vip(config),
        "metrics": _metrics(config),
        "frontends": [
            {
                "name": f.name,
                "binds": [b.haproxy() for b in f.binds],
                "gatewayPort": f.gateway_port,
                "backendPort": ports[f.gateway_port],
                "targetPort": gateway.target_ports[f.gateway_port],
            }
            for f in haproxy.frontends
        ],
        "gatewayBackends": [
            {"address": str(node), "http": ports["http"], "https": ports["https"], "status": ports["status"]}
            for node in gateway.nodes
        ],
        "proxyProtocol": {
            "mode": config.proxy_protocol.mode,
            "strict": config.proxy_protocol.strict,
            "version": haproxy.proxy_protocol_version,
        },
        "numTrustedProxies": istio.trusted_proxy_hops,
        "envoyFilterName": f"{istio.namespace}/{envoy_filter_name(config)}" if envoy_filter(config) else None,
        "authorizationPolicies": (
            list(authorization_policies) if authorization_policies is not None else policy_names(config)
        ),
        "trustedPeersFilterName": (
            f"{istio.namespace}/{trusted_peer_filter_name(config)}" if trusted_peer_filter(config) else None
        ),
        "access": {
            # The stack file's own entries; a list file's networks are counted, not listed (a
            # 100,000-line feed would make every preview print it).
            "allow": [str(n) for n in config.access.allow],
            "deny": [str(n) for n in config.access.deny],
            "trustedPeers": [str(n) for n in config.access.trusted_peers],
            **{
                f"{which}Summary": {
                    "networks": config.access.count(which),
                    "afterMerging": len(getattr(config.access, f"{which}_blocks")),
                    "files": {f.path: f.entries for f in getattr(config.access, f"{which}_files")},
                    "enforcedAt": getattr(config.access, f"{which}_at"),
                }
                for which in ("allow", "deny")
            },
        },
        "haproxyConfigSha256": config_sha256(haproxy_config),
        "istioVersion": istio.version,
        "gateway": _gateway(config),
    }


def _gateway(config: StackConfig) -> dict[str, Any]:
    """What runs the gateway: the chart's Deployment or DaemonSet, or a Gateway API Gateway and what istiod
    generates for it."""
    istio, gateway = config.istio, config.gateway
    service: dict[str, Any] = {"type": gateway.service_type, "externalTrafficPolicy": gateway.external_traffic_policy}
    if gateway.service_type == "NodePort":
        service["nodePorts"] = dict(gateway.node_ports)
    if gateway.api == "gateway-api":
        return {
            "api": gateway.api,
            "kind": "Gateway",
            "apiVersion": f"{GATEWAY_API_GROUP}/v1",
            "namespace": istio.namespace,
            "name": istio.gateway_name,
            "gatewayClassName": "istio",
            # Labels istiod puts on the pods it generates; objects attach with targetRefs, not these.
            "labels": generated_pod_labels(config),
            # The Gateway itself is this stack's in every case; istio.install only says who runs istiod.
            "managed": istio.install,
            "service": {"name": generated_name(config), **service},
            "parametersConfigMap": parameters_name(config),
            "listenerPorts": {name: gateway.target_ports[name] for name in ("http", "https")},
        }
    return {
        "api": gateway.api,
        # gateway.nodeNames: the chart's DaemonSet on the named nodes (istio_gateway/placement.py).
        "kind": "DaemonSet" if istio.install and gateway.node_names else "Deployment",
        "namespace": istio.namespace,
        "name": istio.gateway_name,
        "labels": dict(istio.gateway_labels),
        "managed": istio.install,
        "service": {"name": istio.gateway_name, **service},
    }


def _vip(config: StackConfig) -> dict[str, Any] | None:
    """The VIP visitors reach (DNS points here); which host holds it is runtime state, not an output."""
    vip = config.haproxy.vip
    if vip is None:
        return None
    return {
        "address": str(vip.address.ip),
        "prefixLength": vip.address.network.prefixlen,
        "virtualRouterId": vip.virtual_router_id,
        "priorities": dict(vip.priorities),
    }


def _metrics(config: StackConfig) -> dict[str, Any] | None:
    """Where a monitoring stack scrapes each host: `targets` as Prometheus writes them (HOST:PORT).
    A loopback bind is scraped on the host itself (an agent there), so its target is loopback."""
    metrics = config.haproxy.metrics
    if metrics is None:
        return None
    bind = metrics.bind
    return {
        "bind": bind.haproxy(),
        "metricsPath": metrics.metrics_path,
        "statsPath": metrics.stats_path,
        "targets": [
            {"host": h.name, "target": f"{h.address}:{bind.port}" if bind.ip is None else bind.haproxy()}
            for h in config.haproxy.hosts
        ],
    }
