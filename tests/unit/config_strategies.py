"""Hypothesis strategies for the stack configuration: inputs drawn from config_schema.json (a small
walker over the keywords the schema uses), mutations of a valid configuration, and configurations
meant to be accepted, varied over every key."""

from __future__ import annotations

import base64
import copy
import ipaddress
from typing import Any

from hypothesis import strategies as st

from components.config import HOST_KEY_TYPES, NODE_PORT_RANGE, SECRET_KEYS, load_schema

# ---------------------------------------------------------------------------- any JSON value

# Strings that look like what the keys want, so that random values also reach the semantic checks.
_LOOKALIKES = [
    "",
    " ",
    ":80",
    "[::]:443",
    "0.0.0.0:0",
    "192.0.2.1",
    "192.0.2.0/24",
    "10.0.0.1/8",
    "::/0",
    "2001:db8::/129",
    "5s",
    "0",
    "1us",
    "24d",
    "25d",
    "-1s",
    "ssh-ed25519 AAAA",
    "1.31.4",
    "1.16.0",
    "a\nb",
    "true",
    "null",
    "{}",
    "http",
    "https",
    "NodePort",
    "LoadBalancer",
    "native",
    "x" * 300,
]
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(_LOOKALIKES),
)
json_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


# ---------------------------------------------------------------------------- from the schema


def from_schema(node: dict[str, Any] | None = None) -> st.SearchStrategy:
    """Values that match the schema's shape (types, enums, patterns, bounds, required keys); the
    meaning (CIDRs, durations, host keys, cross-field rules) is left to chance."""
    node = _shape_schema() if node is None else node
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "oneOf" in node:
        return st.one_of([from_schema(option) for option in node["oneOf"]])
    kind = node.get("type")
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(min_value=node.get("minimum", -(2**31)), max_value=node.get("maximum", 2**31))
    if kind == "string":
        if "pattern" in node:
            return st.from_regex(node["pattern"], fullmatch=True).filter(lambda s: len(s) <= 253)
        min_size = node.get("minLength", 0)
        return st.one_of(
            st.text(min_size=min_size, max_size=40), st.sampled_from([s for s in _LOOKALIKES if len(s) >= min_size])
        )
    if kind == "array":
        return st.lists(from_schema(node.get("items", {})), min_size=node.get("minItems", 0), max_size=4)
    if kind == "object":
        properties = node.get("properties", {})
        required = set(node.get("required", []))
        fixed = st.fixed_dictionaries(
            {key: from_schema(properties[key]) for key in required},
            optional={key: from_schema(child) for key, child in properties.items() if key not in required},
        )
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):  # a map, e.g. gatewayLabels
            return st.dictionaries(
                st.from_regex(r"[a-z][a-z0-9./-]{0,20}", fullmatch=True),
                from_schema(extra),
                min_size=node.get("minProperties", 0),
                max_size=3,
            )
        return fixed
    return json_values


def _shape_schema() -> dict[str, Any]:
    schema = load_schema()
    for key in SECRET_KEYS:  # read apart from the others (get_secret)
        del schema["properties"][key]
    schema["required"] = [key for key in schema["required"] if key not in SECRET_KEYS]
    return schema


# ---------------------------------------------------------------------------- meant to be accepted


@st.composite
def host_keys(draw) -> str:
    kind = draw(st.sampled_from(HOST_KEY_TYPES))
    material = draw(st.binary(min_size=16, max_size=64))
    blob = len(kind).to_bytes(4, "big") + kind.encode() + material
    return f"{kind} {base64.b64encode(blob).decode()}"


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
names = st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)
durations = st.builds(lambda n, unit: f"{n}{unit}", st.integers(1, 3600), st.sampled_from(["ms", "s", "m", "h", ""]))


@st.composite
def networks(draw, version: int | None = None) -> str:
    v = draw(st.sampled_from([4, 6])) if version is None else version
    address = draw(st.ip_addresses(v=v))
    prefix = draw(st.integers(0 if v == 4 else 0, 32 if v == 4 else 128))
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


@st.composite
def binds(draw) -> str:
    port = draw(st.integers(1, 65535))
    form = draw(st.sampled_from(["any", "v4", "v6"]))
    if form == "any":
        return f":{port}"
    if form == "v4":
        return f"{draw(ipv4)}:{port}"
    return f"[{draw(ipv6)}]:{port}"


@st.composite
def valid_configs(draw) -> dict[str, Any]:
    """Configurations that should be accepted (the few draws that break a cross-field rule are
    refused, which the properties allow)."""
    host_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    hosts = []
    for i, name in enumerate(host_names):
        host: dict[str, Any] = {"name": name, "address": draw(st.one_of(ipv4, ipv6, st.just(f"{name}.example.org")))}
        if draw(st.booleans()):
            host["port"] = draw(st.integers(1, 65535)) if i == 0 else 22 + i
        if draw(st.booleans()):
            host["insecureIgnoreHostKey"] = True
        else:
            host["hostKey"] = draw(host_keys())
        hosts.append(host)
    haproxy: dict[str, Any] = {"hosts": hosts}
    if draw(st.booleans()):
        used: set[str] = set()
        frontends = []
        for name in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
            bind_list = [b for b in draw(st.lists(binds(), min_size=1, max_size=2)) if b not in used]
            if not bind_list:
                continue
            used.update(bind_list)
            frontends.append(
                {
                    "name": name,
                    "bind": bind_list if len(bind_list) > 1 else bind_list[0],
                    "gatewayPort": draw(st.sampled_from(["http", "https"])),
                }
            )
        if frontends:
            haproxy["frontends"] = frontends
    if draw(st.booleans()):
        haproxy["balance"] = draw(st.sampled_from(["roundrobin", "leastconn", "source", "first", "static-rr"]))
    if draw(st.booleans()):
        haproxy["maxconn"] = draw(st.integers(1, 1_000_000))
    if draw(st.booleans()):
        haproxy["timeouts"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    k: durations for k in ("connect", "client", "server", "tunnel", "clientFin", "hardStopAfter")
                },
            )
        )
    if draw(st.booleans()):
        haproxy["proxyProtocolVersion"] = draw(st.sampled_from([1, 2]))

    service_type = draw(st.sampled_from(["NodePort", "LoadBalancer"]))
    nodes = draw(
        st.lists(st.one_of(ipv4, ipv6), min_size=1, max_size=1 if service_type == "LoadBalancer" else 5, unique=True)
    )
    ports = draw(
        st.lists(st.integers(NODE_PORT_RANGE.start, NODE_PORT_RANGE.stop - 1), min_size=3, max_size=3, unique=True)
    )
    policy = draw(st.sampled_from(["Local", "Cluster"]))
    gateway = {
        "nodes": nodes,
        "serviceType": service_type,
        "externalTrafficPolicy": policy,
        "nodePorts": dict(zip(("http", "https", "status"), ports, strict=False)),
    }
    if draw(st.booleans()):
        gateway["targetPorts"] = dict(
            zip(
                ("http", "https"),
                draw(st.lists(st.integers(1, 65535), min_size=2, max_size=2, unique=True)),
                strict=False,
            )
        )
    minor = draw(st.integers(19, 31))
    istio: dict[str, Any] = {"install": draw(st.booleans()), "version": f"1.{minor}.{draw(st.integers(0, 9))}"}
    if draw(st.booleans()):
        istio["namespace"] = draw(names)
        istio["gatewayName"] = draw(names)
        istio["gatewayLabels"] = {draw(names): draw(names)}
    if draw(st.booleans()):
        istio["httpProxiesInFront"] = True
        istio["numTrustedProxies"] = draw(st.integers(1, 16))
    mode = draw(st.sampled_from(["envoyfilter", "native"]))
    proxy_protocol = {"mode": mode, "strict": True if mode == "native" else draw(st.booleans())}
    allow = draw(st.lists(networks(), max_size=6, unique=True))
    deny = [n for n in draw(st.lists(networks(), max_size=6, unique=True)) if n not in allow]
    access: dict[str, Any] = {"allow": allow, "deny": deny}
    if policy == "Local":
        access["trustedPeers"] = draw(st.lists(networks(), max_size=3, unique=True))
    raw = {"haproxy": haproxy, "gateway": gateway, "istio": istio, "proxyProtocol": proxy_protocol, "access": access}
    if not istio["install"] and draw(st.booleans()):
        raw["kubernetes"] = {"renderYamlToDirectory": "/tmp/render"}
    return raw


# ---------------------------------------------------------------------------- mutations


@st.composite
def mutated(draw, base: st.SearchStrategy) -> dict[str, Any]:
    """A configuration from `base` with one to three edits: a value replaced by any JSON value or by
    another key's value, a key removed, an unknown key added, a list entry duplicated."""
    raw = copy.deepcopy(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(raw))
        path = draw(st.sampled_from(paths))
        parent, key = _parent(raw, path)
        action = draw(st.sampled_from(["replace", "swap", "remove", "unknown", "duplicate"]))
        if action == "replace":
            parent[key] = draw(json_values)
        elif action == "swap":
            other_parent, other_key = _parent(raw, draw(st.sampled_from(paths)))
            parent[key] = copy.deepcopy(other_parent[other_key])
        elif action == "remove":
            if isinstance(parent, dict):
                del parent[key]
            else:
                parent.pop(key)
        elif action == "unknown":
            target = parent[key] if isinstance(parent[key], dict) else parent if isinstance(parent, dict) else raw
            target[draw(st.sampled_from(["extra", "Nodes", "allowList", "remoteIPBlocks", "x"]))] = draw(json_values)
        elif action == "duplicate" and isinstance(parent[key], list) and parent[key]:
            parent[key].append(copy.deepcopy(parent[key][0]))
    return raw


def _paths(value: Any, prefix: tuple = ()):
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield (*prefix, i)
            yield from _paths(child, (*prefix, i))


def _parent(raw: Any, path: tuple):
    node = raw
    for part in path[:-1]:
        node = node[part]
    return node, path[-1]


# ---------------------------------------------------------------------------- everything at once


def any_input() -> st.SearchStrategy:
    """What a stack file can hold under the known keys: shaped, mutated, accepted, or anything."""
    return st.one_of(
        from_schema(),
        mutated(valid_configs()),
        mutated(from_schema()),
        valid_configs(),
        st.dictionaries(st.sampled_from(sorted(_shape_schema()["properties"])), json_values, max_size=6),
    )
