"""Render haproxy.cfg for the edge: TCP mode, TLS passed through, PROXY protocol to the gateway.

Pure: the same StackConfig always gives the same bytes, so the file's hash is a stable input
for Pulumi (an unchanged file re-runs nothing on the hosts).
"""

from __future__ import annotations

import hashlib

from components.config import (
    AccessSettings,
    Frontend,
    GatewaySettings,
    HAProxySettings,
    MetricsSettings,
    StackConfig,
    VipSettings,
)

HEALTH_CHECK_PATH = "/healthz/ready"  # the Istio gateway's readiness endpoint on its status port
# The status listener's only virtual host matches every domain ("*" in Istio's
# tools/packaging/common/envoy_bootstrap.json), so any Host is routed. A fixed name, because the
# check request is set per backend, not per server, and says who sends it.
HEALTH_CHECK_HOST = "source-ip-edge-health-check"
ADMIN_SOCKET = "/run/haproxy/admin.sock"  # HAProxy's runtime API on each host
# The servers' states (UP, DOWN, maintenance) as the running workers knew them, saved by the hosts'
# apply script just before each reload and read by the new workers (lib.sh, save_server_state).
SERVER_STATE_FILE = "/run/haproxy/server-state"
# The access lists HAProxy enforces (access.allowAt/denyAt: edge or both), one network a line, each
# written beside haproxy.cfg by its own command (access_list.py) and changed at runtime.
ACCESS_LIST_FILES = {
    "deny": "/etc/haproxy/source-ip-edge-deny.acl",
    "allow": "/etc/haproxy/source-ip-edge-allow.acl",
}

# How the checks follow a gateway node (docs/gateway-placement.md argues each number). A gateway pod
# told to stop answers its readiness with 503 at once and keeps serving for Istio's
# terminationDrainDuration (ProxyConfig; 5 s unless set otherwise, istio.io pkg/config/mesh); the node
# stops serving when that ends if the pod was its only one. HAProxy must have marked it DOWN by then:
# the first 503 comes at most CHECK_INTER_S after the drain starts, the next FALL - 1 at
# CHECK_FASTINTER_S each (fastinter: the interval while a server is between UP and DOWN).
CHECK_INTER_S = 2.0
CHECK_FASTINTER_S = 0.5
CHECK_FALL = 2  # one 503 alone is not enough: during a surge roll a check can meet the old pod once
CHECK_RISE = 2
SLOWSTART_S = 5  # a node back UP takes its share of new connections over this time, not at once
ISTIO_DEFAULT_TERMINATION_DRAIN_S = 5.0


def drain_detection_bound_s() -> float:
    """The longest a draining node stays UP in HAProxy once its readiness answers 503."""
    return CHECK_INTER_S + (CHECK_FALL - 1) * CHECK_FASTINTER_S


def render_haproxy_config(config: StackConfig) -> str:
    """The whole haproxy.cfg, identical for every HAProxy host of the stack."""
    haproxy = config.haproxy
    sections = [
        _header(config),
        _global(haproxy),
        _defaults(haproxy),
        *(_frontend(frontend, haproxy.vip, config.access) for frontend in haproxy.frontends),
        *(_backend(frontend, haproxy, config.gateway) for frontend in haproxy.frontends),
        *([_metrics(haproxy.metrics)] if haproxy.metrics else []),
    ]
    text = "\n".join(sections)
    # The runtime API's `show info` reports `description`: the hosts' apply script reads it to
    # know which config the running workers loaded (a reload's exit code does not say).
    identity = f"    description {config_identity(text)}\n"
    return text.replace("\nglobal\n", f"\nglobal\n{identity}", 1)


def config_identity(text_without_identity: str) -> str:
    """What `show info` reports as `description` once HAProxy has loaded this config."""
    return f"source-ip-edge sha256={config_sha256(text_without_identity)}"


def config_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def backend_name(frontend: Frontend) -> str:
    return f"gateway_{frontend.name}"


def _header(config: StackConfig) -> str:
    return (
        # True whether or not the hosts detect drift: a host is only written when an update
        # changes what it should run, so an edit survives until then and is lost at that point.
        "# Managed by source-ip-edge (Pulumi): local edits are overwritten by the next change that\n"
        "# `pulumi up` applies, and are not kept; change the stack's configuration instead.\n"
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
        f"    stats socket {ADMIN_SOCKET} mode 600 level admin expose-fd listeners",
        # New workers start every server UP until its first check fails: after a reload, a node
        # that is down (or, with externalTrafficPolicy Local, runs no gateway pod) would get
        # visitors again for up to a check's timeout. They start from the old workers' states.
        f"    server-state-file {SERVER_STATE_FILE}",
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
        # HAProxy always speaks first to the gateway (the PROXY header), so the handshake's last
        # ACK can ride on that packet: one packet less per connection (make bench: ~1.1x req/s
        # with a new connection per request, keep-alive unchanged).
        "    option tcp-smart-connect",
        "    load-server-state-from-file global",
        f"    timeout connect {timeouts.connect}",
        f"    timeout client {timeouts.client}",
        f"    timeout server {timeouts.server}",
        # Governs established TCP sessions (websockets, gRPC streams, long downloads).
        f"    timeout tunnel {timeouts.tunnel}",
        f"    timeout client-fin {timeouts.client_fin}",
        *(f"    {line}" for line in haproxy.extra_defaults),
    ]
    return "\n".join(lines) + "\n"


def edge_lists(access: AccessSettings) -> dict[str, str]:
    """The lists HAProxy enforces, by list ('deny', 'allow'): the file on each host."""
    return {which: path for which, path in ACCESS_LIST_FILES.items() if access.at_edge(which)}


def _access_rules(access: AccessSettings) -> list[str]:
    """`tcp-request connection reject` on the visitor's address, before any byte is read or a PROXY
    header sent. Names the files only, never their content: a list change leaves haproxy.cfg as it
    is, and the hosts take the new list at runtime (access_list_apply.sh)."""
    lists = edge_lists(access)
    rules = []
    if "deny" in lists:
        rules.append(f"    tcp-request connection reject if {{ src -f {lists['deny']} }}")
    if "allow" in lists:
        rules.append(f"    tcp-request connection reject if !{{ src -f {lists['allow']} }}")
    return rules


def _frontend(frontend: Frontend, vip: VipSettings | None, access: AccessSettings) -> str:
    lines = [f"frontend {frontend.name}"]
    for bind in frontend.binds:
        # v6only: an IPv6 bind serves IPv6 only, so ':443' and '[::]:443' can sit side by side.
        suffix = " v6only" if bind.ip is not None and bind.ip.version == 6 else ""
        if vip is not None and bind.ip == vip.address.ip:
            # The backup host does not hold the VIP: `transparent` (IP_TRANSPARENT, else
            # IP_FREEBIND) lets it bind anyway, per socket, with no host-wide ip_nonlocal_bind.
            suffix += " transparent"
        lines.append(f"    bind {bind.haproxy()}{suffix}")
    lines.extend(_access_rules(access))
    lines.append(f"    default_backend {backend_name(frontend)}")
    return "\n".join(lines) + "\n"


def _backend(frontend: Frontend, haproxy: HAProxySettings, gateway: GatewaySettings) -> str:
    ports = gateway.backend_ports
    send_proxy = "send-proxy-v2" if haproxy.proxy_protocol_version == 2 else "send-proxy"
    lines = [
        f"backend {backend_name(frontend)}",
        f"    balance {haproxy.balance}",
        # The status listener is an Envoy HTTP connection manager without accept_http_10 (Istio's
        # envoy_bootstrap.json): HTTP/1.0, which `option httpchk GET /path` sends, gets 426
        # (istio/istio#44889) and HTTP/1.1 without Host gets 400 (envoyproxy/envoy#4827).
        # In the file too, so nobody "simplifies" it back to `option httpchk GET /path`.
        "    # The gateway's status listener (Envoy) refuses HTTP/1.0 (426) and HTTP/1.1 without Host (400).",
        "    option httpchk",
        f"    http-check send meth GET uri {HEALTH_CHECK_PATH} ver HTTP/1.1 hdr Host {HEALTH_CHECK_HOST}",
        "    http-check expect status 200",
        # The check goes to the status port (`port`), so it carries no PROXY header: HAProxy adds
        # one to checks only without `port`/`addr`, or with check-send-proxy (configuration.txt).
        # No `on-marked-down shutdown-sessions`: a draining gateway finishes the connections it holds
        # (HTTP/1.1 gets `Connection: close`, HTTP/2 a GOAWAY) until its drain ends; cutting them
        # when the node is marked DOWN would lose the requests in flight on them.
        f"    default-server check port {ports['status']} {_check_timing()} {send_proxy}",
    ]
    for node in gateway.nodes:
        # Named after the node, so adding or removing one leaves the other lines unchanged.
        address = f"[{node}]" if node.version == 6 else str(node)
        lines.append(f"    server node-{node} {address}:{ports[frontend.gateway_port]}")
    return "\n".join(lines) + "\n"


def _check_timing() -> str:
    def ms(seconds: float) -> str:
        millis = round(seconds * 1000)
        return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"

    return (
        f"inter {ms(CHECK_INTER_S)} fastinter {ms(CHECK_FASTINTER_S)} fall {CHECK_FALL} rise {CHECK_RISE} "
        f"slowstart {SLOWSTART_S}s"
    )


def _metrics(metrics: MetricsSettings) -> str:
    # HAProxy's built-in exporter (Debian's 2.6 is built with it: `haproxy -vv`, "Prometheus
    # exporter as a service") and the stats page, on a listener of their own.
    return (
        "\n".join(
            [
                "frontend metrics",
                "    mode http",
                f"    bind {metrics.bind.haproxy()}",
                "    option dontlog-normal",  # errors only: a scrape every few seconds is not news
                f"    http-request use-service prometheus-exporter if {{ path {metrics.metrics_path} }}",
                "    stats enable",
                f"    stats uri {metrics.stats_path}",
                "    stats refresh 10s",
            ]
        )
        + "\n"
    )
