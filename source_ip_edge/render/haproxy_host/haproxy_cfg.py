"""Render haproxy.cfg for the edge: TCP mode, TLS passed through, PROXY protocol to the gateway.

Pure: the same StackConfig always gives the same bytes, so the file's hash is a stable input
for Pulumi (an unchanged file re-runs nothing on the hosts).
"""

from __future__ import annotations

import hashlib

from source_ip_edge.config import Frontend, GatewaySettings, HAProxySettings, StackConfig

HEALTH_CHECK_PATH = "/healthz/ready"  # the Istio gateway's readiness endpoint on its status port


def render_haproxy_config(config: StackConfig) -> str:
    """The whole haproxy.cfg, identical for every HAProxy host of the stack."""
    haproxy = config.haproxy
    sections = [
        _header(config),
        _global(haproxy),
        _defaults(haproxy),
        *(_frontend(frontend) for frontend in haproxy.frontends),
        *(_backend(frontend, haproxy, config.gateway) for frontend in haproxy.frontends),
    ]
    return "\n".join(sections)


def config_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def backend_name(frontend: Frontend) -> str:
    return f"gateway_{frontend.name}"


def _header(config: StackConfig) -> str:
    return (
        "# Managed by source-ip-edge (Pulumi). Local edits are replaced on the next `pulumi up`.\n"
        f"# Visitors' TCP connections go to the Istio ingress gateway ({config.istio.namespace}/"
        f"{config.istio.gateway_name})\n"
        "# with a PROXY protocol header carrying the visitor's address; TLS is passed through untouched.\n"
    )


def _global(haproxy: HAProxySettings) -> str:
    lines = [
        "global",
        "    log /dev/log local0",
        "    chroot /var/lib/haproxy",
        "    user haproxy",
        "    group haproxy",
        f"    maxconn {haproxy.maxconn}",
        # expose-fd lets a reloading process take over the listening sockets: no refused connections.
        "    stats socket /run/haproxy/admin.sock mode 600 level admin expose-fd listeners",
        # Old processes keep serving long-lived tunnels after a reload; this bounds how long.
        f"    hard-stop-after {haproxy.timeouts.hard_stop_after}",
        *(f"    {line}" for line in haproxy.extra_global),
    ]
    return "\n".join(lines) + "\n"


def _defaults(haproxy: HAProxySettings) -> str:
    timeouts = haproxy.timeouts
    lines = [
        "defaults",
        "    log global",
        "    mode tcp",
        "    option tcplog",
        "    option dontlognull",
        f"    timeout connect {timeouts.connect}",
        f"    timeout client {timeouts.client}",
        f"    timeout server {timeouts.server}",
        # Governs established TCP sessions (websockets, gRPC streams, long downloads).
        f"    timeout tunnel {timeouts.tunnel}",
        f"    timeout client-fin {timeouts.client_fin}",
        *(f"    {line}" for line in haproxy.extra_defaults),
    ]
    return "\n".join(lines) + "\n"


def _frontend(frontend: Frontend) -> str:
    lines = [f"frontend {frontend.name}"]
    for bind in frontend.binds:
        # v6only: an IPv6 bind serves IPv6 only, so ':443' and '[::]:443' can sit side by side.
        suffix = " v6only" if bind.ip is not None and bind.ip.version == 6 else ""
        lines.append(f"    bind {bind.haproxy()}{suffix}")
    lines.append(f"    default_backend {backend_name(frontend)}")
    return "\n".join(lines) + "\n"


def _backend(frontend: Frontend, haproxy: HAProxySettings, gateway: GatewaySettings) -> str:
    ports = gateway.backend_ports
    send_proxy = "send-proxy-v2" if haproxy.proxy_protocol_version == 2 else "send-proxy"
    lines = [
        f"backend {backend_name(frontend)}",
        f"    balance {haproxy.balance}",
        # The check goes to the status port, which takes no PROXY header (check-send-proxy
        # would only apply to a check on the traffic port).
        f"    option httpchk GET {HEALTH_CHECK_PATH}",
        f"    default-server check port {ports['status']} inter 2s fall 3 rise 2 {send_proxy}",
    ]
    for node in gateway.nodes:
        # Named after the node, so adding or removing one leaves the other lines unchanged.
        address = f"[{node}]" if node.version == 6 else str(node)
        lines.append(f"    server node-{node} {address}:{ports[frontend.gateway_port]}")
    return "\n".join(lines) + "\n"
