"""The stack configuration: raw `source-ip-edge:*` values in, frozen typed objects out.

Validation happens here once, before any resource exists. Every error names the key path the
user wrote (``source-ip-edge:access.allow[2]``) and says what is wrong; nothing downstream
re-checks. The shape (types, allowed keys, enums), every default and every key's description are
a JSON schema (config_schema.json); the meaning (CIDRs, durations, uniqueness, cross-field rules)
is checked in Python.

Pure: imports nothing from pulumi.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema

PROJECT = "source-ip-edge"
SCHEMA_PATH = Path(__file__).with_name("config_schema.json")


def load_schema() -> dict[str, Any]:
    """The schema: the shape, and the one source of every default and description."""
    return json.loads(SCHEMA_PATH.read_text())


_SCHEMA = load_schema()
# writeOnly marks a secret: read with get_secret, apart from the objects parse_stack_config gets.
TOP_LEVEL_KEYS = tuple(key for key, node in _SCHEMA["properties"].items() if not node.get("writeOnly"))
SECRET_KEYS = tuple(key for key, node in _SCHEMA["properties"].items() if node.get("writeOnly"))

# The Istio gateway chart's Service ports; with serviceType LoadBalancer HAProxy sends to these.
GATEWAY_SERVICE_PORTS = {"http": 80, "https": 443, "status": 15021}
# Ports Istio's proxy (pilot-agent and Envoy) binds itself in every gateway pod ("Ports used by Istio",
# istio.io docs/ops/deployment/application-requirements): a listener there clashes with them.
ISTIO_PROXY_PORTS = {
    15000: "Envoy admin",
    15001: "Envoy outbound",
    15004: "debug",
    15006: "Envoy inbound",
    15008: "HBONE",
    15009: "HBONE",
    15020: "merged Prometheus telemetry",
    15021: "health checks",
    15053: "DNS",
    15090: "Envoy Prometheus telemetry",
}
# A Kubernetes Service name is a DNS-1035 label (a letter first, at most 63 characters); istiod names
# a Gateway's Service `<gateway>-istio` and does not shorten it (gatewaycommon GetDefaultName).
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# A Kubernetes label key: an optional DNS-subdomain prefix (at most 253 characters) and '/', then a
# name of at most 63 (k8s.io/apimachinery validation.IsQualifiedName).
_LABEL_KEY_PREFIX = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_KEY_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
GATEWAY_API_MAX_CERTIFICATE_REFS = 64  # Gateway listener tls.certificateRefs maxItems (Gateway API CRD)
NODE_PORT_RANGE = range(30000, 32768)  # kube-apiserver's default --service-node-port-range

# Istio versions that matter to what we render.
NATIVE_PROXY_PROTOCOL_SINCE = (1, 19)  # gatewayTopology.proxyProtocol
LISTENER_FILTER_PATCH_SINCE = (1, 17)  # EnvoyFilter applyTo LISTENER_FILTER / INSERT_FIRST
# gateway.api gateway-api: the generated Service is customised through a ConfigMap that the
# Gateway's spec.infrastructure.parametersRef names: istiod reads it since Istio 1.26.0 (istio/istio
# #55283, commit 6a74d98; before that the reference is ignored and the pinned NodePorts never apply).
GATEWAY_API_SINCE = (1, 26)
# The Gateway API CRDs installed with istio.install: true: the standard channel of the
# sigs.k8s.io/gateway-api release the pinned Istio line is built against (its go.mod: v1.6.x).
GATEWAY_API_VERSION = "v1.6.3"
GATEWAY_API_ISTIO_LINE = (1, 31)

HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
)
_DURATION = re.compile(r"^(\d+)(us|ms|s|m|h|d)?$")
_DURATION_MS = {"us": 0.001, "ms": 1, None: 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_HAPROXY_MAX_TIMER_MS = 2**31 - 1
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# An Istio release (1.31.4), or a pre-release of one (1.31.0-rc.1, 1.31.0-alpha.0, or the lab's charts
# built from an untagged commit, 1.31.0-dev.eed52ebb66ad): semver's pre-release suffix.
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$")
_BIND = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]*)):(?P<port>\d+)$")
# keepalived's `auth_pass` (auth_type PASS) keeps 8 characters and cuts the rest (keepalived.conf(5));
# `#` and `!` start a comment there, `$` a parameter, quotes and braces are syntax.
VRRP_PASSWORD = re.compile(r"^[A-Za-z0-9._~+=@%^*:,/-]{1,8}$")
VRRP_PRIORITY_TOP = 150  # the first host's priority; each next host 10 lower (255 is for the address owner)


class ConfigError(ValueError):
    """A user mistake in the stack configuration, worded for the user."""

    def __init__(self, key_path: str, problem: str):
        self.key_path = key_path
        self.problem = problem
        super().__init__(f"{PROJECT}:{key_path}: {problem}")


# ---------------------------------------------------------------------------- typed configuration


@dataclass(frozen=True)
class SshHost:
    """One HAProxy host, provisioned over SSH."""

    name: str
    address: str
    port: int
    user: str
    host_key: str | None
    """Pinned server key (`type base64`); None only with insecureIgnoreHostKey: true."""


@dataclass(frozen=True)
class BindAddress:
    """Where a frontend listens: an IP (None for all IPv4 addresses) and a port."""

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    port: int

    def haproxy(self) -> str:
        if self.ip is None:
            return f":{self.port}"
        if self.ip.version == 6:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class Frontend:
    name: str
    binds: tuple[BindAddress, ...]
    gateway_port: str
    """Which gateway port it forwards to: 'http' or 'https'."""


@dataclass(frozen=True)
class Timeouts:
    connect: str
    client: str
    server: str
    tunnel: str
    client_fin: str
    hard_stop_after: str


@dataclass(frozen=True)
class VipSettings:
    """A virtual IP the hosts share through keepalived (VRRP). The password is a secret and is
    not kept here: the program hands it to the hosts as a secret Output."""

    address: ipaddress.IPv4Interface
    """The VIP with the prefix length of its subnet (203.0.113.100/24)."""
    interface: str | None
    """The interface carrying it; None: found on each host from the VIP's subnet."""
    virtual_router_id: int
    priorities: Mapping[str, int]
    """Each host's VRRP priority by host name, in host order; with nopreempt it only decides
    between hosts that start together."""
    unicast: bool = False
    """Adverts to the other hosts' addresses (unicast_peer) instead of the multicast group."""


@dataclass(frozen=True)
class MetricsSettings:
    """HAProxy's Prometheus exporter and stats page on one HTTP listener of every host."""

    bind: BindAddress
    metrics_path: str = "/metrics"
    stats_path: str = "/stats"


@dataclass(frozen=True)
class HAProxySettings:
    hosts: tuple[SshHost, ...]
    frontends: tuple[Frontend, ...]
    balance: str
    maxconn: int
    timeouts: Timeouts
    proxy_protocol_version: int
    extra_global: tuple[str, ...]
    extra_defaults: tuple[str, ...]
    vip: VipSettings | None = None
    metrics: MetricsSettings | None = None


@dataclass(frozen=True)
class GatewaySettings:
    nodes: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    service_type: str
    node_ports: Mapping[str, int]
    """NodePorts of the gateway Service: http, https, status."""
    target_ports: Mapping[str, int]
    """The gateway container's ports for http and https: Envoy's listener ports."""
    external_traffic_policy: str
    api: str = "istio"
    """'istio' (the gateway Helm chart) or 'gateway-api' (a Gateway API Gateway istiod deploys)."""
    allowed_route_namespaces: str = "Same"
    """gateway-api: Same, Selector or All."""
    allowed_route_labels: Mapping[str, str] = field(default_factory=dict)
    """gateway-api, Selector: the labels a namespace needs to attach routes."""
    https_tls_mode: str = "Passthrough"
    """gateway-api: Passthrough or Terminate."""
    https_certificate_secrets: tuple[str, ...] = ()
    """gateway-api, Terminate: the TLS Secrets of the HTTPS listener."""
    node_names: Mapping[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = field(default_factory=dict)
    """The Kubernetes node name of every node address (in `nodes` order), or empty: not given."""

    @property
    def backend_ports(self) -> dict[str, int]:
        """Ports HAProxy connects to on each node: NodePorts, or the Service ports of an LB."""
        if self.service_type == "NodePort":
            return dict(self.node_ports)
        if self.api == "gateway-api":
            # istiod's generated Service exposes each Gateway listener on its own port.
            return {
                "http": self.target_ports["http"],
                "https": self.target_ports["https"],
                "status": GATEWAY_SERVICE_PORTS["status"],
            }
        return dict(GATEWAY_SERVICE_PORTS)


@dataclass(frozen=True)
class IstioSettings:
    install: bool
    version: str
    chart_repository: str
    namespace: str
    gateway_name: str
    gateway_labels: Mapping[str, str]
    trusted_proxy_hops: int
    """numTrustedProxies: Envoy's xff_num_trusted_hops."""
    http_proxies_in_front: bool

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return _version_tuple(self.version)

    def at_least(self, since: tuple[int, int]) -> bool:
        """Whether this Istio is release `since` (major, minor) or later. As in semver, a pre-release
        comes before its release: 1.19.0-rc.1 is not yet 1.19, while 1.20.0-dev is past 1.19."""
        major, minor, patch = self.version_tuple
        match = _VERSION.match(self.version)
        is_prerelease = match is not None and match[4] is not None
        return (major, minor, patch, not is_prerelease) >= (*since, 0, True)


@dataclass(frozen=True)
class ProxyProtocolSettings:
    mode: str
    """'envoyfilter' or 'native'."""
    strict: bool


ENFORCEMENT_POINTS = ("edge", "gateway", "both")


@dataclass(frozen=True)
class ListFile:
    """A file of CIDRs that a list was read from: the path the stack names, and what it held."""

    path: str
    """As written in the stack configuration (relative to the project directory, or absolute)."""
    entries: int
    """CIDR lines it held (comments and blank lines not counted)."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# A network from a list file, kept as plain integers: (IP version, first address, prefix length).
# A million ipaddress objects take most of a gigabyte; these take a tenth of that.
PackedNetwork = tuple[int, int, int]


@dataclass(frozen=True)
class AccessSettings:
    allow: tuple[Network, ...]
    """access.allow: the allowed networks written in the stack file."""
    deny: tuple[Network, ...]
    """access.deny: the denied networks written in the stack file."""
    trusted_peers: tuple[Network, ...]
    """Direct peers (HAProxy egress addresses) allowed to reach the gateway; empty: no lock."""
    allow_at: str = "gateway"
    """Where the allow list is enforced: 'edge' (HAProxy), 'gateway' (AuthorizationPolicy) or 'both'."""
    deny_at: str = "gateway"
    """Where the deny list is enforced: 'edge', 'gateway' or 'both'."""
    allow_files: tuple[ListFile, ...] = ()
    deny_files: tuple[ListFile, ...] = ()
    allow_from: tuple[PackedNetwork, ...] = ()
    """The access.allowFrom files' networks, each once."""
    deny_from: tuple[PackedNetwork, ...] = ()
    """The access.denyFrom files' networks, each once."""

    @cached_property  # merged once: long lists cost seconds per merge
    def allow_blocks(self) -> tuple[str, ...]:
        """The allow list as the policy and the edge carry it, as CIDR text: the stack file's and the
        files' networks, adjacent and overlapping ones merged."""
        return collapse_packed([*map(pack_network, self.allow), *self.allow_from])

    @cached_property
    def deny_blocks(self) -> tuple[str, ...]:
        """The deny list as carried, merged on its own (never with the allow list)."""
        return collapse_packed([*map(pack_network, self.deny), *self.deny_from])

    def count(self, which: str) -> int:
        """Networks in the list ('allow' or 'deny') before merging: the stack file's and the files'."""
        return len(getattr(self, which)) + len(getattr(self, f"{which}_from"))

    def at_edge(self, which: str) -> bool:
        """Whether HAProxy enforces the list ('allow' or 'deny'); an empty list is enforced nowhere."""
        return self.count(which) > 0 and getattr(self, f"{which}_at") in ("edge", "both")

    def at_gateway(self, which: str) -> bool:
        """Whether AuthorizationPolicies on the gateway enforce the list ('allow' or 'deny')."""
        return self.count(which) > 0 and getattr(self, f"{which}_at") in ("gateway", "both")


# One AuthorizationPolicy is one etcd write, which etcd refuses over 1.5 MiB by default
# (--max-request-bytes=1572864); the CIDR list gets 1 MiB, the rest is the object around it. A
# longer list is split across several policies (source_ip_policy/policies.py).
MAX_POLICY_CIDR_BYTES = 1024 * 1024


def pack_network(network: Network) -> PackedNetwork:
    return network.version, int(network.network_address), network.prefixlen


def collapse_networks(networks: Iterable[Network]) -> tuple[Network, ...]:
    """Fewer, equivalent networks (what ipaddress.collapse_addresses gives), IPv4 first, each
    version sorted."""
    return tuple(ipaddress.ip_network(text) for text in collapse_packed(map(pack_network, networks)))


def collapse_packed(networks: Iterable[PackedNetwork]) -> tuple[str, ...]:
    """Fewer, equivalent networks as CIDR text, IPv4 first, each version sorted: the address ranges
    sorted and joined where they overlap or touch, then each range cut into its largest aligned
    blocks. Integers throughout: ipaddress.collapse_addresses took 8 s for 100,000 networks."""
    by_version: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for version, start, prefix in networks:
        bits = 32 if version == 4 else 128
        by_version[version].append((start, start | ((1 << (bits - prefix)) - 1)))
    out: list[str] = []
    for version, ranges in by_version.items():
        bits = 32 if version == 4 else 128
        text = _ipv4_text if version == 4 else _ipv6_text
        ranges.sort()
        current_start, current_end = -2, -2
        for start, end in [*ranges, (-1, -1)]:
            if start != -1 and start <= current_end + 1:
                current_end = max(current_end, end)
                continue
            low = current_start
            while 0 <= low <= current_end:
                size = low & -low if low else 1 << bits
                while size > current_end - low + 1:
                    size >>= 1
                out.append(f"{text(low)}/{bits - size.bit_length() + 1}")
                low += size
            current_start, current_end = start, end
    return tuple(out)


def _ipv4_text(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def _ipv6_text(value: int) -> str:
    return str(ipaddress.IPv6Address(value))


@dataclass(frozen=True)
class KubernetesSettings:
    context: str | None
    render_yaml_to_directory: str | None


@dataclass(frozen=True)
class StackConfig:
    haproxy: HAProxySettings
    gateway: GatewaySettings
    istio: IstioSettings
    proxy_protocol: ProxyProtocolSettings
    access: AccessSettings
    kubernetes: KubernetesSettings = field(default_factory=lambda: KubernetesSettings(None, None))


# ---------------------------------------------------------------------------- parsing


def schema_defaults(node: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults of an object node's keys: each key's own `default`, or for an object key, the
    defaults of its keys. Keys without a default (required, or meaning "unset") are left out, and
    so is an object with required keys of its own (`haproxy.vip`): it exists only when written."""
    defaults: dict[str, Any] = {}
    for key, child in node.get("properties", {}).items():
        if "default" in child:
            defaults[key] = copy.deepcopy(child["default"])
        elif "properties" in child and not child.get("required"):
            defaults[key] = schema_defaults(child)
    return defaults


def _with_defaults(raw: Mapping[str, Any], key_path: str) -> dict[str, Any]:
    """`raw` (the object at key_path, e.g. `haproxy.hosts[]`) with every key it leaves out that has
    a default in the schema set to that default."""
    node = _SCHEMA
    for part in key_path.split("."):
        node = node["properties"][part.removesuffix("[]")]
        if part.endswith("[]"):
            node = node["items"]
    return {**schema_defaults(node), **raw}


def _shape_schema() -> dict[str, Any]:
    """The schema of what parse_stack_config gets: the secrets are read apart, with get_secret."""
    schema = load_schema()
    for key in SECRET_KEYS:
        del schema["properties"][key]
    schema["required"] = [key for key in schema["required"] if key not in SECRET_KEYS]
    return schema


def parse_stack_config(
    raw: Mapping[str, Any],
    *,
    has_ssh_private_key: bool = True,
    vrrp_password: str | None = None,
    project_dir: Path | None = None,
) -> StackConfig:
    """Turn the raw project config (keys without the `source-ip-edge:` prefix) into a StackConfig.

    `vrrp_password` is the secret `vrrpPassword`'s plain value, checked here and never stored or
    echoed. `project_dir` is where access.allowFrom and access.denyFrom paths start (default: the
    working directory, which is the project directory under `pulumi`). Raises ConfigError naming the first bad key.
    """
    _check_shape(raw)
    if not has_ssh_private_key:
        raise ConfigError(
            "sshPrivateKey",
            "is required: set it with `pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`",
        )
    istio = _parse_istio(raw.get("istio") or {})
    proxy_protocol = _parse_proxy_protocol(raw.get("proxyProtocol") or {}, istio)
    gateway = _parse_gateway(raw["gateway"])
    haproxy = _parse_haproxy(raw["haproxy"])
    _check_vrrp_password(vrrp_password, haproxy.vip)
    access = _parse_access(raw.get("access") or {}, gateway, project_dir)
    kubernetes = _parse_kubernetes(raw.get("kubernetes") or {}, istio)
    _refuse_gateway_api_conflicts(raw, gateway, istio, kubernetes, haproxy)
    return StackConfig(haproxy, gateway, istio, proxy_protocol, access, kubernetes)


def check_known_keys(full_keys: Iterable[str]) -> None:
    """Refuse `source-ip-edge:*` keys we do not know (typos would otherwise be ignored)."""
    known = set(TOP_LEVEL_KEYS) | set(SECRET_KEYS)
    for full_key in sorted(full_keys):
        namespace, _, key = full_key.partition(":")
        if namespace == PROJECT and key.split(".")[0] not in known:
            raise ConfigError(key, f"is not a known key (known: {', '.join(sorted(known))})")


def _check_shape(raw: Mapping[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(_shape_schema())
    errors = sorted(
        validator.iter_errors(dict(raw)), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))
    )
    if not errors:
        return
    error = errors[0]
    path = _key_path(error.absolute_path)
    if error.validator == "required":
        missing = re.search(r"'([^']+)' is a required property", error.message)
        name = missing.group(1) if missing else "?"
        raise ConfigError(f"{path}.{name}" if path else name, "is required")
    if error.validator == "additionalProperties":
        # From the object itself, not jsonschema's message: a key such as '' or "a'b" defeats parsing it.
        known = set(error.schema.get("properties", {}))
        name = min((str(key) for key in error.instance if key not in known), default="?")
        if re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ConfigError(f"{path}.{name}" if path else name, "is not a known key")
        raise ConfigError(path or "(root)", f"{json.dumps(name)} is not a known key")
    raise ConfigError(path or "(root)", _schema_problem(error))


def _schema_problem(error: jsonschema.ValidationError) -> str:
    value = json.dumps(error.instance)
    if error.validator == "enum":
        return f"{value} is not one of {', '.join(json.dumps(v) for v in error.validator_value)}"
    if error.validator == "type":
        return f"{value} must be of type {error.validator_value}"
    if error.validator == "pattern":
        return f"{value} is not a valid name (expected pattern {error.validator_value})"
    if error.validator in ("minimum", "maximum"):
        return f"{value} is out of range ({error.schema.get('minimum')}..{error.schema.get('maximum')})"
    if error.validator in ("minItems", "minLength", "minProperties"):
        return f"{value} must not be empty"
    if error.validator == "oneOf":
        return f"{value} must be a string or a list of strings"
    return error.message


def _key_path(parts: Sequence[Any]) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _parse_istio(raw: Mapping[str, Any]) -> IstioSettings:
    raw = _with_defaults(raw, "istio")
    version = raw["version"]
    if not _VERSION.match(version):
        raise ConfigError(
            "istio.version", f"{version!r} is not an Istio release like 1.31.4 (or a pre-release like 1.31.0-rc.1)"
        )
    hops = raw["numTrustedProxies"]
    http_proxies_in_front = raw["httpProxiesInFront"]
    if hops > 0 and not http_proxies_in_front:
        # Behind a TCP-mode HAProxy nothing appends X-Forwarded-For, so every XFF entry Envoy
        # would trust came from the visitor: numTrustedProxies 2 lets a visitor pick its own IP.
        raise ConfigError(
            "istio.numTrustedProxies",
            f"{hops} would trust X-Forwarded-For entries a visitor can forge behind a TCP-mode HAProxy; "
            "use 0, or set istio.httpProxiesInFront: true if real L7 proxies in front append X-Forwarded-For",
        )
    if http_proxies_in_front and hops == 0:
        raise ConfigError(
            "istio.numTrustedProxies",
            "must count the L7 proxies in front (at least 1) when istio.httpProxiesInFront is true",
        )
    return IstioSettings(
        install=raw["install"],
        version=version,
        chart_repository=raw["chartRepository"],
        namespace=raw["namespace"],
        gateway_name=raw["gatewayName"],
        gateway_labels=dict(raw["gatewayLabels"]),
        trusted_proxy_hops=hops,
        http_proxies_in_front=http_proxies_in_front,
    )


def _parse_proxy_protocol(raw: Mapping[str, Any], istio: IstioSettings) -> ProxyProtocolSettings:
    raw = _with_defaults(raw, "proxyProtocol")
    mode = raw["mode"]
    strict = raw["strict"]
    if mode == "native" and not istio.at_least(NATIVE_PROXY_PROTOCOL_SINCE):
        raise ConfigError(
            "proxyProtocol.mode",
            f"native needs Istio >= 1.19 (gatewayTopology.proxyProtocol); istio.version is {istio.version}",
        )
    if mode == "envoyfilter" and not istio.at_least(LISTENER_FILTER_PATCH_SINCE):
        raise ConfigError(
            "proxyProtocol.mode",
            f"envoyfilter needs Istio >= 1.17 (applyTo LISTENER_FILTER); istio.version is {istio.version}",
        )
    if not strict and mode != "envoyfilter":
        raise ConfigError(
            "proxyProtocol.strict",
            "false needs mode envoyfilter: Istio's native gatewayTopology.proxyProtocol is always strict",
        )
    return ProxyProtocolSettings(mode=mode, strict=strict)


def _parse_gateway(raw: Mapping[str, Any]) -> GatewaySettings:
    raw = _with_defaults(raw, "gateway")
    nodes = tuple(_parse_ip(node, f"gateway.nodes[{i}]") for i, node in enumerate(raw["nodes"]))
    _refuse_duplicates(nodes, "gateway.nodes")
    service_type = raw["serviceType"]
    if service_type == "LoadBalancer" and len(nodes) != 1:
        raise ConfigError("gateway.nodes", "must hold exactly the load balancer's IP when serviceType is LoadBalancer")
    node_names = _parse_node_names(raw["nodeNames"], nodes, service_type)
    node_ports = _with_defaults(raw["nodePorts"], "gateway.nodePorts")
    for name, port in node_ports.items():
        if port not in NODE_PORT_RANGE:
            raise ConfigError(
                f"gateway.nodePorts.{name}",
                f"{port} is outside the NodePort range {NODE_PORT_RANGE.start}-{NODE_PORT_RANGE.stop - 1}",
            )
    _refuse_duplicates_in_mapping(node_ports, "gateway.nodePorts")
    target_ports = _with_defaults(raw["targetPorts"], "gateway.targetPorts")
    _refuse_duplicates_in_mapping(target_ports, "gateway.targetPorts")
    for name, port in target_ports.items():
        if port in ISTIO_PROXY_PORTS:
            raise ConfigError(
                f"gateway.targetPorts.{name}",
                f"{port} is a port Istio's proxy uses itself ({ISTIO_PROXY_PORTS[port]}) in every "
                "gateway pod; choose another",
            )
    allowed_routes = _with_defaults(raw["allowedRoutes"], "gateway.allowedRoutes")
    namespaces, namespace_labels = allowed_routes["namespaces"], allowed_routes["namespaceLabels"]
    if namespaces == "Selector" and not namespace_labels:
        raise ConfigError(
            "gateway.allowedRoutes.namespaceLabels", "must name at least one label when namespaces is Selector"
        )
    for label_key in namespace_labels:
        prefix, _, name = label_key.rpartition("/")
        if (
            label_key.count("/") > 1
            or not _LABEL_KEY_NAME.match(name)
            or ("/" in label_key and not _LABEL_KEY_PREFIX.match(prefix))
        ):
            raise ConfigError(
                "gateway.allowedRoutes.namespaceLabels",
                f"{json.dumps(label_key)} is not a Kubernetes label key "
                "(an optional DNS-subdomain prefix and '/', then at most "
                "63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)",
            )
    if namespaces != "Selector" and namespace_labels:
        raise ConfigError(
            "gateway.allowedRoutes.namespaceLabels",
            f"is only used with namespaces: Selector (namespaces is {namespaces})",
        )
    https_tls = _with_defaults(raw["httpsTls"], "gateway.httpsTls")
    secrets = tuple(https_tls["certificateSecrets"])
    _refuse_duplicates(secrets, "gateway.httpsTls.certificateSecrets")
    if https_tls["mode"] == "Terminate" and not secrets:
        raise ConfigError("gateway.httpsTls.certificateSecrets", "must name the TLS Secret(s) when mode is Terminate")
    if https_tls["mode"] == "Passthrough" and secrets:
        raise ConfigError(
            "gateway.httpsTls.certificateSecrets",
            "is only used with mode: Terminate (Passthrough leaves TLS to the applications)",
        )
    if len(secrets) > GATEWAY_API_MAX_CERTIFICATE_REFS:
        raise ConfigError(
            "gateway.httpsTls.certificateSecrets",
            f"names {len(secrets)} Secrets; "
            f"a Gateway listener takes at most {GATEWAY_API_MAX_CERTIFICATE_REFS} certificateRefs",
        )
    return GatewaySettings(
        nodes=nodes,
        service_type=service_type,
        node_ports=node_ports,
        target_ports=target_ports,
        external_traffic_policy=raw["externalTrafficPolicy"],
        api=raw["api"],
        allowed_route_namespaces=namespaces,
        allowed_route_labels=dict(namespace_labels),
        https_tls_mode=https_tls["mode"],
        https_certificate_secrets=secrets,
        node_names=node_names,
    )


def _parse_node_names(
    raw: Mapping[str, str],
    nodes: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
    service_type: str,
) -> dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str]:
    """gateway.nodeNames: every address of gateway.nodes named, or none; keyed and ordered as `nodes`."""
    if not raw:
        return {}
    key = "gateway.nodeNames"
    if service_type != "NodePort":
        raise ConfigError(key, f"is only used with serviceType: NodePort (serviceType is {service_type})")
    named: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
    for address, name in raw.items():
        ip = _ip_or_none(address)
        if ip is None:
            raise ConfigError(
                key, f"{json.dumps(address)} is not an IP address; its keys are the addresses in gateway.nodes"
            )
        if ip not in nodes:
            raise ConfigError(key, f"{address} is not one of gateway.nodes")
        if ip in named:
            raise ConfigError(key, f"{address} is named twice ({named[ip]} and {name})")
        named[ip] = name
    missing = [f"{node} (gateway.nodes[{i}])" for i, node in enumerate(nodes) if node not in named]
    if missing:
        raise ConfigError(key, f"has no name for {', '.join(missing)}; name every node of gateway.nodes, or none")
    by_name: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
    for ip, name in named.items():
        if name in by_name:
            raise ConfigError(key, f"{by_name[name]} and {ip} are both named {name}: one node has one address here")
        by_name[name] = ip
    return {node: named[node] for node in nodes}


def _parse_haproxy(raw: Mapping[str, Any]) -> HAProxySettings:
    raw = _with_defaults(raw, "haproxy")
    hosts = tuple(_parse_host(host, f"haproxy.hosts[{i}]") for i, host in enumerate(raw["hosts"]))
    _refuse_duplicates([h.name for h in hosts], "haproxy.hosts", what="name")
    _refuse_duplicates([(h.address, h.port) for h in hosts], "haproxy.hosts", what="address")
    frontends = tuple(
        _parse_frontend(frontend, f"haproxy.frontends[{i}]") for i, frontend in enumerate(raw["frontends"])
    )
    _refuse_duplicates([f.name for f in frontends], "haproxy.frontends", what="name")
    _refuse_bind_conflicts(frontends)
    timeouts_raw = _with_defaults(raw["timeouts"], "haproxy.timeouts")
    for name, value in timeouts_raw.items():
        _parse_duration(value, f"haproxy.timeouts.{name}")
    extra = _with_defaults(raw["extra"], "haproxy.extra")
    extra_global = tuple(
        _parse_extra_line(line, f"haproxy.extra.global[{i}]") for i, line in enumerate(extra["global"])
    )
    extra_defaults = tuple(
        _parse_extra_line(line, f"haproxy.extra.defaults[{i}]") for i, line in enumerate(extra["defaults"])
    )
    vip = _parse_vip(raw["vip"], hosts) if "vip" in raw else None
    metrics = _parse_metrics(raw["metrics"], frontends) if "metrics" in raw else None
    if vip is not None:
        _refuse_binds_on_host_addresses(frontends, hosts)
    return HAProxySettings(
        hosts=hosts,
        frontends=frontends,
        balance=raw["balance"],
        maxconn=raw["maxconn"],
        timeouts=Timeouts(
            connect=timeouts_raw["connect"],
            client=timeouts_raw["client"],
            server=timeouts_raw["server"],
            tunnel=timeouts_raw["tunnel"],
            client_fin=timeouts_raw["clientFin"],
            hard_stop_after=timeouts_raw["hardStopAfter"],
        ),
        proxy_protocol_version=raw["proxyProtocolVersion"],
        extra_global=extra_global,
        extra_defaults=extra_defaults,
        vip=vip,
        metrics=metrics,
    )


def _parse_vip(raw: Mapping[str, Any], hosts: Sequence[SshHost]) -> VipSettings:
    raw = _with_defaults(raw, "haproxy.vip")
    key = "haproxy.vip.address"
    if len(hosts) < 2:
        raise ConfigError("haproxy.vip", f"needs at least two haproxy.hosts to move between (there is {len(hosts)})")
    text = raw["address"]
    try:
        address = ipaddress.ip_interface(text)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an address with its prefix length, like 203.0.113.100/24") from None
    if "/" not in text:
        raise ConfigError(key, f"{text!r} needs the prefix length of the hosts' subnet, like {text}/24")
    if address.version != 4:
        raise ConfigError(key, f"{text!r}: only IPv4 VIPs are supported (VRRPv2 with a password)")
    network = address.network
    if network.prefixlen < 31 and address.ip in (network.network_address, network.broadcast_address):
        raise ConfigError(
            key,
            f"{text!r} is the subnet's {'network' if address.ip == network.network_address else 'broadcast'} address",
        )
    for i, host in enumerate(hosts):
        if host.address == str(address.ip):
            raise ConfigError(
                key, f"{address.ip} is haproxy.hosts[{i}]'s own address; the VIP must be an address no host has"
            )
    host_ips = [_ip_or_none(host.address) for host in hosts]  # None: a DNS name, not determinable here
    if not raw["sshOverOtherNetwork"]:
        for i, (host, host_ip) in enumerate(zip(hosts, host_ips, strict=False)):
            if host_ip is not None and host_ip.version == 4 and host_ip not in network:
                raise ConfigError(
                    key,
                    f"{text} is outside the subnet of haproxy.hosts[{i}] ({host.address}); VRRP moves the VIP "
                    "within one subnet (set haproxy.vip.sshOverOtherNetwork: true if SSH uses a management network)",
                )
    if raw["unicast"]:
        _check_unicast_peers(hosts, host_ips, network, raw["sshOverOtherNetwork"])
    priorities = {host.name: VRRP_PRIORITY_TOP - 10 * i for i, host in enumerate(hosts)}
    if min(priorities.values()) < 1:
        raise ConfigError("haproxy.hosts", f"at most {VRRP_PRIORITY_TOP // 10} hosts can share a VIP")
    return VipSettings(
        address=address,
        interface=raw.get("interface"),
        virtual_router_id=raw["virtualRouterId"],
        priorities=priorities,
        unicast=raw["unicast"],
    )


def _ip_or_none(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _check_unicast_peers(
    hosts: Sequence[SshHost],
    host_ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address | None],
    network: ipaddress.IPv4Network,
    ssh_elsewhere: bool,
) -> None:
    """Unicast VRRP sends to the hosts' addresses: they must be IPv4 addresses on the VIP's segment."""
    key = "haproxy.vip.unicast"
    if ssh_elsewhere:
        raise ConfigError(
            key,
            "cannot be combined with haproxy.vip.sshOverOtherNetwork: the peers are the hosts' "
            "addresses, which must be on the VIP's subnet",
        )
    for i, (host, host_ip) in enumerate(zip(hosts, host_ips, strict=False)):
        if host_ip is None:
            raise ConfigError(
                key,
                f"needs IP addresses: haproxy.hosts[{i}].address is {host.address!r} "
                "(keepalived's unicast_peer takes addresses, not names)",
            )
        if host_ip.version != 4 or host_ip not in network:
            raise ConfigError(
                key, f"haproxy.hosts[{i}].address {host.address} is not an IPv4 address in the VIP's subnet {network}"
            )


def _refuse_binds_on_host_addresses(frontends: Sequence[Frontend], hosts: Sequence[SshHost]) -> None:
    """Every host gets the same haproxy.cfg: a bind on one host's own address cannot work on the others."""
    host_addresses = {host.address: i for i, host in enumerate(hosts)}
    for i, frontend in enumerate(frontends):
        for bind in frontend.binds:
            if bind.ip is not None and str(bind.ip) in host_addresses:
                raise ConfigError(
                    f"haproxy.frontends[{i}].bind",
                    f"{bind.haproxy()} is haproxy.hosts[{host_addresses[str(bind.ip)]}]'s own address; with a VIP "
                    "bind on the VIP or on every address (':PORT')",
                )


def _check_vrrp_password(password: str | None, vip: VipSettings | None) -> None:
    key = "vrrpPassword"
    if vip is None:
        if password is not None:
            raise ConfigError(key, "is set but haproxy.vip is not; remove it or configure the VIP")
        return
    if password is None:
        raise ConfigError(key, "is required with haproxy.vip: `pulumi config set --secret vrrpPassword`")
    if not VRRP_PASSWORD.match(password):
        # Never echo the value: it is a secret.
        raise ConfigError(
            key,
            "must be 1 to 8 characters (keepalived's auth_pass keeps only 8): "
            "letters, digits and - . _ ~ + = @ % ^ * : , /",
        )


def _parse_metrics(raw: Mapping[str, Any], frontends: Sequence[Frontend]) -> MetricsSettings:
    raw = _with_defaults(raw, "haproxy.metrics")
    key = "haproxy.metrics.bind"
    bind = _parse_bind(raw["bind"], key)
    if not raw["allowPublic"] and (bind.ip is None or not bind.ip.is_loopback):
        raise ConfigError(
            key,
            f"{raw['bind']!r} is not a loopback address: the stats page and metrics would be open to whoever "
            "reaches it; bind 127.0.0.1:PORT, or set haproxy.metrics.allowPublic: true",
        )
    for i, frontend in enumerate(frontends):
        for other in frontend.binds:
            if other.port == bind.port and (other.ip is None or bind.ip is None or other.ip == bind.ip):
                raise ConfigError(key, f"{bind.haproxy()} clashes with haproxy.frontends[{i}] ({other.haproxy()})")
    return MetricsSettings(bind=bind)


def _parse_host(raw: Mapping[str, Any], key: str) -> SshHost:
    raw = _with_defaults(raw, "haproxy.hosts[]")
    address = raw["address"]
    try:
        address = str(ipaddress.ip_address(address))
    except ValueError:
        if not _HOSTNAME.match(address):
            raise ConfigError(f"{key}.address", f"{address!r} is neither an IP address nor a host name") from None
    host_key = raw.get("hostKey")
    insecure = raw["insecureIgnoreHostKey"]
    if host_key is None and not insecure:
        raise ConfigError(
            f"{key}.hostKey",
            "is required to pin the server's SSH key (e.g. `ssh-keyscan -t ed25519 HOST`); "
            "set insecureIgnoreHostKey: true to accept any key",
        )
    if host_key is not None and insecure:
        raise ConfigError(f"{key}.insecureIgnoreHostKey", "true contradicts the pinned hostKey; drop one of them")
    if host_key is not None:
        host_key = _parse_host_key(host_key, f"{key}.hostKey")
    return SshHost(
        name=raw["name"],
        address=address,
        port=raw["port"],
        user=raw["user"],
        host_key=host_key,
    )


def _parse_host_key(value: str, key: str) -> str:
    parts = value.split()
    if len(parts) < 2 or parts[0] not in HOST_KEY_TYPES:
        raise ConfigError(key, f"must be '<type> <base64>' with type one of {', '.join(HOST_KEY_TYPES)}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(key, "the key material is not valid base64") from None
    # The blob starts with its own type name (RFC 4253 §6.6): catches a key pasted under the wrong type.
    if len(blob) < 4 or blob[4 : 4 + int.from_bytes(blob[:4], "big")].decode(errors="replace") != parts[0]:
        raise ConfigError(key, f"the key material is not a {parts[0]} key")
    return f"{parts[0]} {parts[1]}"


def _parse_frontend(raw: Mapping[str, Any], key: str) -> Frontend:
    bind_values = raw["bind"] if isinstance(raw["bind"], list) else [raw["bind"]]
    binds = tuple(
        _parse_bind(value, f"{key}.bind" + (f"[{i}]" if isinstance(raw["bind"], list) else ""))
        for i, value in enumerate(bind_values)
    )
    return Frontend(name=raw["name"], binds=binds, gateway_port=raw["gatewayPort"])


def _parse_bind(value: str, key: str) -> BindAddress:
    match = _BIND.match(value)
    if not match:
        raise ConfigError(key, f"{value!r} is not ':PORT', 'IPV4:PORT' or '[IPV6]:PORT'")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ConfigError(key, f"port {port} is out of range (1..65535)")
    text = match["v6"] if match["v6"] is not None else match["v4"]
    if not text:
        return BindAddress(None, port)
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an IP address") from None
    if (match["v6"] is not None) != (ip.version == 6):
        raise ConfigError(key, f"{text!r}: write IPv6 addresses in brackets and IPv4 without")
    return BindAddress(ip, port)


def _refuse_bind_conflicts(frontends: Sequence[Frontend]) -> None:
    seen: dict[tuple[Any, int], str] = {}
    for i, frontend in enumerate(frontends):
        for bind in frontend.binds:
            clash = seen.get((bind.ip, bind.port))
            if clash is not None:
                raise ConfigError(
                    f"haproxy.frontends[{i}].bind", f"{bind.haproxy()} is already bound by frontend {clash!r}"
                )
            seen[(bind.ip, bind.port)] = frontend.name


def _parse_extra_line(line: str, key: str) -> str:
    # One directive per entry: a newline would let a value open a new section.
    if "\n" in line or "\r" in line:
        raise ConfigError(key, "must be a single line")
    if not line.strip():
        raise ConfigError(key, "must not be empty")
    return line.strip()


def _parse_access(raw: Mapping[str, Any], gateway: GatewaySettings, project_dir: Path | None) -> AccessSettings:
    raw = _with_defaults(raw, "access")
    allow = tuple(_parse_cidr(value, f"access.allow[{i}]") for i, value in enumerate(raw["allow"]))
    deny = tuple(_parse_cidr(value, f"access.deny[{i}]") for i, value in enumerate(raw["deny"]))
    peers = tuple(_parse_cidr(value, f"access.trustedPeers[{i}]") for i, value in enumerate(raw["trustedPeers"]))
    _refuse_duplicates(allow, "access.allow")
    _refuse_duplicates(deny, "access.deny")
    _refuse_duplicates(peers, "access.trustedPeers")
    denied = set(deny)  # a set: 5,000-entry lists made the tuple lookup quadratic (seconds per render)
    for i, network in enumerate(allow):
        if network in denied:
            raise ConfigError(f"access.allow[{i}]", f"{network} is also in access.deny; DENY wins, so remove one")
    base = project_dir if project_dir is not None else Path.cwd()
    allow_files, allow_from = _read_list_files(raw["allowFrom"], "access.allowFrom", base)
    deny_files, deny_from = _read_list_files(raw["denyFrom"], "access.denyFrom", base)
    access = AccessSettings(
        allow=allow,
        deny=deny,
        trusted_peers=peers,
        allow_at=raw["allowAt"],
        deny_at=raw["denyAt"],
        allow_files=allow_files,
        deny_files=deny_files,
        allow_from=allow_from,
        deny_from=deny_from,
    )
    if peers and gateway.external_traffic_policy != "Local":
        # With Cluster, kube-proxy SNATs: the gateway's direct peer is a node, not HAProxy.
        raise ConfigError(
            "access.trustedPeers",
            "needs gateway.externalTrafficPolicy: Local (with Cluster the direct peer is a node IP)",
        )
    return access


_IPV4_CIDR = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:/(\d{1,2}))?")


def _read_list_files(
    paths: Sequence[str], key: str, base: Path
) -> tuple[tuple[ListFile, ...], tuple[PackedNetwork, ...]]:
    """Each file's CIDRs, one a line; `#` starts a comment, blank lines are skipped; every network
    once. A bad line is refused naming the file and the line number."""
    files: list[ListFile] = []
    networks: dict[PackedNetwork, None] = {}  # feeds overlap: a network twice is kept once
    seen: dict[Path, int] = {}
    for i, path in enumerate(paths):
        file_key = f"{key}[{i}]"
        full = (base / path).resolve()
        if full in seen:
            raise ConfigError(file_key, f"{path!r} is already listed at [{seen[full]}]")
        seen[full] = i
        if not full.exists():
            raise ConfigError(file_key, f"{path!r}: no such file (paths are relative to the project, {base})")
        if full.is_dir():
            raise ConfigError(file_key, f"{path!r} is a directory, not a file of CIDRs")
        if not full.is_file():  # a FIFO or a device would block or never end
            raise ConfigError(file_key, f"{path!r} is not a regular file")
        try:
            text = full.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(file_key, f"{path!r} is not UTF-8 text (byte {error.start})") from None
        except OSError as error:
            raise ConfigError(file_key, f"{path!r} cannot be read: {error.strerror}") from None
        count = 0
        for number, line in enumerate(text.splitlines(), start=1):
            value = line.split("#", 1)[0].strip() if "#" in line else line.strip()
            if not value:
                continue
            networks[_parse_list_line(value, file_key, f"{path}:{number}")] = None
            count += 1
        files.append(ListFile(path=path, entries=count))
    return tuple(files), tuple(networks)


def _parse_list_line(value: str, key: str, where: str) -> PackedNetwork:
    """One list file line as a packed network: IPv4 by hand (a million lines in seconds), anything
    else, and every refusal, by ipaddress, so both accept exactly what ip_network(strict=True) does."""
    match = _IPV4_CIDR.fullmatch(value)
    if match:
        octets = match.group(1, 2, 3, 4)
        prefix = int(match[5]) if match[5] is not None else 32
        if prefix <= 32 and not any(len(o) > 1 and o[0] == "0" or int(o) > 255 for o in octets):
            start = int(octets[0]) << 24 | int(octets[1]) << 16 | int(octets[2]) << 8 | int(octets[3])
            if not start & ((1 << (32 - prefix)) - 1):
                return 4, start, prefix
    try:
        return pack_network(ipaddress.ip_network(value, strict=True))
    except ValueError as error:
        if "has host bits set" in str(error):
            suggestion = ipaddress.ip_network(value, strict=False)
            raise ConfigError(key, f"{where}: {value!r} has host bits set; did you mean {suggestion}?") from None
        raise ConfigError(key, f"{where}: {value!r} is not a CIDR") from None


def _parse_kubernetes(raw: Mapping[str, Any], istio: IstioSettings) -> KubernetesSettings:
    render_dir = raw.get("renderYamlToDirectory")
    if render_dir is not None and istio.install:
        # pulumi-kubernetes cannot render helm.v3.Release to a directory (pulumi-kubernetes#1716).
        raise ConfigError(
            "kubernetes.renderYamlToDirectory",
            "needs istio.install: false (Helm releases cannot be rendered to a directory)",
        )
    if render_dir is not None and raw.get("context") is not None:
        raise ConfigError(
            "kubernetes.context", "cannot be combined with kubernetes.renderYamlToDirectory (no cluster is used)"
        )
    return KubernetesSettings(context=raw.get("context"), render_yaml_to_directory=render_dir)


def _refuse_gateway_api_conflicts(
    raw: Mapping[str, Any],
    gateway: GatewaySettings,
    istio: IstioSettings,
    kubernetes: KubernetesSettings,
    haproxy: HAProxySettings,
) -> None:
    """Keys that only mean something for one gateway.api, and what gateway-api needs of Istio."""
    # Compared with the schema's defaults, not by presence: a stack file may spell defaults out.
    gateway_defaults, istio_defaults = _with_defaults({}, "gateway"), _with_defaults({}, "istio")
    if gateway.api == "istio":
        gateway_api_only = {
            "allowedRoutes": (gateway.allowed_route_namespaces, dict(gateway.allowed_route_labels)),
            "httpsTls": (gateway.https_tls_mode, list(gateway.https_certificate_secrets)),
        }
        for key, value in gateway_api_only.items():
            default = gateway_defaults[key]
            if value != tuple(default.values()):
                raise ConfigError(f"gateway.{key}", "is only used with gateway.api: gateway-api")
        return
    if dict(istio.gateway_labels) != istio_defaults["gatewayLabels"]:
        # istiod labels the pods it generates itself (gateway.networking.k8s.io/gateway-name), and
        # our objects attach to the Gateway with targetRefs: a selector on them is ineffective (IST0166).
        raise ConfigError(
            "istio.gatewayLabels",
            "is a gateway-chart key; "
            "with gateway.api: gateway-api istiod labels the pods and objects attach by targetRefs: remove it",
        )
    generated = f"{istio.gateway_name}-istio"
    if not _DNS_1035_LABEL.match(generated):
        raise ConfigError(
            "istio.gatewayName",
            f"{istio.gateway_name!r} names the Service istiod generates {generated!r}, "
            "which is not a valid Service name "
            "(a letter first, at most 63 characters): use a name that starts with a letter, at most 57 characters",
        )
    if not any(frontend.gateway_port == "https" for frontend in haproxy.frontends):
        default = gateway_defaults["httpsTls"]
        if (gateway.https_tls_mode, list(gateway.https_certificate_secrets)) != tuple(default.values()):
            raise ConfigError(
                "gateway.httpsTls",
                "is unused: no haproxy.frontends entry has gatewayPort: https, so the Gateway has no HTTPS listener",
            )
    if not istio.at_least(GATEWAY_API_SINCE):
        raise ConfigError(
            "gateway.api",
            f"gateway-api needs Istio >= {GATEWAY_API_SINCE[0]}.{GATEWAY_API_SINCE[1]} "
            "(the generated Service is customised through spec.infrastructure.parametersRef); "
            f"istio.version is {istio.version}",
        )
    if istio.install and istio.version_tuple[:2] != GATEWAY_API_ISTIO_LINE:
        raise ConfigError(
            "gateway.api",
            f"gateway-api with istio.install: true installs the Gateway API CRDs {GATEWAY_API_VERSION}, "
            "pinned for Istio "
            f"{GATEWAY_API_ISTIO_LINE[0]}.{GATEWAY_API_ISTIO_LINE[1]}; istio.version is {istio.version} "
            "(install the CRDs your Istio supports yourself and set istio.install: false)",
        )
    if kubernetes.render_yaml_to_directory is not None:
        raise ConfigError(
            "kubernetes.renderYamlToDirectory",
            "cannot be combined with gateway.api: gateway-api (the Gateway API CRDs are checked in the cluster)",
        )


# ---------------------------------------------------------------------------- value parsers


def _parse_ip(value: str, key: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(key, f"{value!r} is not an IP address") from None


def _parse_cidr(value: str, key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        if "has host bits set" in str(error):
            suggestion = ipaddress.ip_network(value, strict=False)
            raise ConfigError(key, f"{value!r} has host bits set; did you mean {suggestion}?") from None
        raise ConfigError(key, f"{value!r} is not a CIDR") from None


def _parse_duration(value: str, key: str) -> float:
    """HAProxy time format: a number with an optional unit (us, ms, s, m, h, d); bare means ms."""
    match = _DURATION.match(value)
    if not match:
        raise ConfigError(key, f"{value!r} is not an HAProxy duration such as 500ms, 5s, 1m or 1h")
    millis = int(match[1]) * _DURATION_MS[match[2]]
    if millis <= 0:
        raise ConfigError(key, f"{value!r} must be greater than zero")
    if millis > _HAPROXY_MAX_TIMER_MS:
        raise ConfigError(key, f"{value!r} exceeds HAProxy's largest timer (about 24 days)")
    return millis


def _version_tuple(version: str) -> tuple[int, int, int]:
    match = _VERSION.match(version)
    assert match, version
    return int(match[1]), int(match[2]), int(match[3])


def _refuse_duplicates(values: Sequence[Any], key: str, *, what: str = "entry") -> None:
    seen: dict[Any, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            shown = value if not isinstance(value, tuple) else ":".join(map(str, value))
            raise ConfigError(f"{key}[{i}]", f"duplicate {what} {shown} (also at [{seen[value]}])")
        seen[value] = i


def _refuse_duplicates_in_mapping(mapping: Mapping[str, int], key: str) -> None:
    seen: dict[int, str] = {}
    for name, value in mapping.items():
        if value in seen:
            raise ConfigError(f"{key}.{name}", f"{value} is already used by {key}.{seen[value]}")
        seen[value] = name
