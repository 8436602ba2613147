"""Every rule of the configuration contract, each with a failing example that names its key."""

from __future__ import annotations

import ipaddress

import pytest

from components.config import ConfigError, check_known_keys, parse_stack_config

from .conftest import HOST_KEY, make_config, valid_raw


def test_minimal_config_takes_documented_defaults():
    config = make_config()
    assert config.istio.trusted_proxy_hops == 0
    assert config.istio.install is True
    assert config.istio.gateway_labels == {"istio": "ingressgateway"}
    assert [f.name for f in config.haproxy.frontends] == ["http", "https"]
    assert config.haproxy.frontends[1].binds[0].port == 443
    assert config.haproxy.hosts[0].port == 22 and config.haproxy.hosts[0].user == "root"
    assert config.gateway.node_ports == {"http": 30080, "https": 30443, "status": 30021}
    assert config.gateway.external_traffic_policy == "Local"
    assert config.haproxy.timeouts.tunnel == "1h"
    assert config.haproxy.proxy_protocol_version == 2


def test_config_objects_are_frozen():
    config = make_config()
    with pytest.raises(AttributeError):
        config.istio.trusted_proxy_hops = 2  # type: ignore[misc]


def test_cidrs_and_ips_are_parsed_v4_and_v6():
    def mutate(raw):
        raw["access"] = {"allow": ["198.51.100.0/24", "2001:db8::/32", "192.0.2.7"], "deny": ["2001:db8:bad::/48"]}
        raw["gateway"]["nodes"] = ["192.0.2.50", "2001:db8::50"]

    config = make_config(mutate)
    assert config.access.allow[0] == ipaddress.ip_network("198.51.100.0/24")
    assert config.access.allow[2] == ipaddress.ip_network("192.0.2.7/32")
    assert config.access.deny[0].version == 6
    assert config.gateway.nodes[1] == ipaddress.ip_address("2001:db8::50")


def _set(path, value):
    def mutate(raw):
        target = raw
        for part in path[:-1]:
            target = target.setdefault(part, {}) if isinstance(part, str) else target[part]
        target[path[-1]] = value

    return mutate


def _delete(path):
    def mutate(raw):
        target = raw
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return mutate


BAD_VALUES = [
    # (id, mutation, key path in the message, words in the message)
    (
        "allow-not-cidr",
        _set(("access", "allow"), ["198.51.100.0/24", "192.0.2.0/24", "10.0.0.0/33"]),
        "access.allow[2]",
        "is not a CIDR",
    ),
    ("allow-host-bits", _set(("access", "allow"), ["198.51.100.7/24"]), "access.allow[0]", "host bits set"),
    ("deny-garbage", _set(("access", "deny"), ["everyone"]), "access.deny[0]", "is not a CIDR"),
    ("allow-duplicate", _set(("access", "allow"), ["192.0.2.0/24", "192.0.2.0/24"]), "access.allow[1]", "duplicate"),
    (
        "allow-and-deny",
        lambda r: r.update(access={"allow": ["192.0.2.0/24"], "deny": ["192.0.2.0/24"]}),
        "access.allow[0]",
        "also in access.deny",
    ),
    (
        "trusted-peers-cluster",
        lambda r: (
            r["access"].update(trustedPeers=["203.0.113.10/32"]),
            r["gateway"].update(externalTrafficPolicy="Cluster"),
        ),
        "access.trustedPeers",
        "externalTrafficPolicy: Local",
    ),
    ("node-not-ip", _set(("gateway", "nodes"), ["192.0.2.50", "node-a"]), "gateway.nodes[1]", "is not an IP address"),
    ("node-duplicate", _set(("gateway", "nodes"), ["192.0.2.50", "192.0.2.50"]), "gateway.nodes[1]", "duplicate"),
    ("nodes-empty", _set(("gateway", "nodes"), []), "gateway.nodes", "must not be empty"),
    (
        "nodeport-range",
        _set(("gateway", "nodePorts"), {"http": 8080}),
        "gateway.nodePorts.http",
        "outside the NodePort range",
    ),
    ("nodeport-duplicate", _set(("gateway", "nodePorts"), {"http": 30443}), "gateway.nodePorts.https", "already used"),
    (
        "nodeport-type",
        _set(("gateway", "nodePorts"), {"http": "30080"}),
        "gateway.nodePorts.http",
        "must be of type integer",
    ),
    ("service-type", _set(("gateway", "serviceType"), "ClusterIP"), "gateway.serviceType", "is not one of"),
    ("lb-two-ips", _set(("gateway", "serviceType"), "LoadBalancer"), "gateway.nodes", "exactly the load balancer"),
    ("etp", _set(("gateway", "externalTrafficPolicy"), "local"), "gateway.externalTrafficPolicy", "is not one of"),
    ("trusted-hops-without-proxies", _set(("istio", "numTrustedProxies"), 2), "istio.numTrustedProxies", "forge"),
    ("proxies-without-hops", _set(("istio", "httpProxiesInFront"), True), "istio.numTrustedProxies", "at least 1"),
    ("negative-hops", _set(("istio", "numTrustedProxies"), -1), "istio.numTrustedProxies", "out of range"),
    ("istio-version", _set(("istio", "version"), "latest"), "istio.version", "is not an Istio release"),
    (
        "native-old-istio",
        lambda r: (r["istio"].update(version="1.18.2"), r["proxyProtocol"].update(mode="native")),
        "proxyProtocol.mode",
        "1.19",
    ),
    ("envoyfilter-old-istio", _set(("istio", "version"), "1.16.0"), "proxyProtocol.mode", "1.17"),
    (
        "istio-version-empty-prerelease",
        _set(("istio", "version"), "1.31.0-"),
        "istio.version",
        "is not an Istio release",
    ),
    ("istio-version-build-only", _set(("istio", "version"), "1.31.0+abc"), "istio.version", "is not an Istio release"),
    # A pre-release comes before its release (semver): 1.19.0-rc.1 is not yet the 1.19 native needs.
    (
        "native-prerelease-of-minimum",
        lambda r: (r["istio"].update(version="1.19.0-rc.1"), r["proxyProtocol"].update(mode="native")),
        "proxyProtocol.mode",
        "1.19",
    ),
    ("envoyfilter-prerelease-of-minimum", _set(("istio", "version"), "1.17.0-beta.0"), "proxyProtocol.mode", "1.17"),
    (
        "lenient-native",
        _set(("proxyProtocol",), {"mode": "native", "strict": False}),
        "proxyProtocol.strict",
        "envoyfilter",
    ),
    ("mode", _set(("proxyProtocol", "mode"), "both"), "proxyProtocol.mode", "is not one of"),
    ("strict-type", _set(("proxyProtocol", "strict"), "yes"), "proxyProtocol.strict", "must be of type boolean"),
    ("namespace", _set(("istio", "namespace"), "Istio_System"), "istio.namespace", "not a valid name"),
    (
        "label-value",
        _set(("istio", "gatewayLabels"), {"istio": "ingress gateway"}),
        "istio.gatewayLabels.istio",
        "not a valid name",
    ),
    (
        "host-missing-key",
        _delete(("haproxy", "hosts", 0, "hostKey")),
        "haproxy.hosts[0].hostKey",
        "insecureIgnoreHostKey",
    ),
    (
        "host-key-garbage",
        _set(("haproxy", "hosts", 0, "hostKey"), "ssh-ed25519 not-base64!"),
        "haproxy.hosts[0].hostKey",
        "not valid base64",
    ),
    (
        "host-key-wrong-type",
        _set(("haproxy", "hosts", 0, "hostKey"), "ssh-rsa " + HOST_KEY.split()[1]),
        "haproxy.hosts[0].hostKey",
        "not a ssh-rsa key",
    ),
    (
        "host-key-type",
        _set(("haproxy", "hosts", 0, "hostKey"), "ssh-dss AAAA"),
        "haproxy.hosts[0].hostKey",
        "type one of",
    ),
    (
        "host-key-and-insecure",
        _set(("haproxy", "hosts", 0, "insecureIgnoreHostKey"), True),
        "haproxy.hosts[0].insecureIgnoreHostKey",
        "contradicts",
    ),
    (
        "host-address",
        _set(("haproxy", "hosts", 0, "address"), "edge 1"),
        "haproxy.hosts[0].address",
        "neither an IP address nor a host name",
    ),
    ("host-port", _set(("haproxy", "hosts", 0, "port"), 70000), "haproxy.hosts[0].port", "out of range"),
    ("host-name", _set(("haproxy", "hosts", 0, "name"), "Edge_1"), "haproxy.hosts[0].name", "not a valid name"),
    ("host-unknown-key", _set(("haproxy", "hosts", 0, "adress"), "x"), "haproxy.hosts[0].adress", "not a known key"),
    (
        "hosts-duplicate-name",
        lambda r: r["haproxy"]["hosts"].append({"name": "edge-1", "address": "203.0.113.11", "hostKey": HOST_KEY}),
        "haproxy.hosts[1]",
        "duplicate name",
    ),
    (
        "hosts-duplicate-address",
        lambda r: r["haproxy"]["hosts"].append({"name": "edge-2", "address": "203.0.113.10", "hostKey": HOST_KEY}),
        "haproxy.hosts[1]",
        "duplicate address",
    ),
    ("hosts-missing", _delete(("haproxy", "hosts")), "haproxy.hosts", "is required"),
    ("haproxy-missing", _delete(("haproxy",)), "haproxy", "is required"),
    (
        "bind",
        _set(("haproxy", "frontends"), [{"name": "http", "bind": "*:80", "gatewayPort": "http"}]),
        "haproxy.frontends[0].bind",
        "is not ':PORT'",
    ),
    (
        "bind-port",
        _set(("haproxy", "frontends"), [{"name": "http", "bind": ":0", "gatewayPort": "http"}]),
        "haproxy.frontends[0].bind",
        "out of range",
    ),
    (
        "bind-v6-no-brackets",
        _set(("haproxy", "frontends"), [{"name": "http", "bind": ["[192.0.2.1]:80"], "gatewayPort": "http"}]),
        "haproxy.frontends[0].bind[0]",
        "brackets",
    ),
    (
        "bind-clash",
        _set(
            ("haproxy", "frontends"),
            [{"name": "a", "bind": ":80", "gatewayPort": "http"}, {"name": "b", "bind": ":80", "gatewayPort": "https"}],
        ),
        "haproxy.frontends[1].bind",
        "already bound",
    ),
    (
        "frontend-port-name",
        _set(("haproxy", "frontends"), [{"name": "http", "bind": ":80", "gatewayPort": "grpc"}]),
        "haproxy.frontends[0].gatewayPort",
        "is not one of",
    ),
    (
        "frontend-duplicate",
        _set(
            ("haproxy", "frontends"),
            [{"name": "x", "bind": ":80", "gatewayPort": "http"}, {"name": "x", "bind": ":81", "gatewayPort": "http"}],
        ),
        "haproxy.frontends[1]",
        "duplicate name",
    ),
    ("balance", _set(("haproxy", "balance"), "random-ish"), "haproxy.balance", "is not one of"),
    ("maxconn", _set(("haproxy", "maxconn"), 0), "haproxy.maxconn", "out of range"),
    (
        "timeout-unit",
        _set(("haproxy", "timeouts"), {"client": "50 seconds"}),
        "haproxy.timeouts.client",
        "not an HAProxy duration",
    ),
    ("timeout-zero", _set(("haproxy", "timeouts"), {"connect": "0s"}), "haproxy.timeouts.connect", "greater than zero"),
    ("timeout-huge", _set(("haproxy", "timeouts"), {"tunnel": "30d"}), "haproxy.timeouts.tunnel", "largest timer"),
    ("timeout-unknown", _set(("haproxy", "timeouts"), {"queue": "5s"}), "haproxy.timeouts.queue", "not a known key"),
    ("pp-version", _set(("haproxy", "proxyProtocolVersion"), 3), "haproxy.proxyProtocolVersion", "is not one of"),
    (
        "extra-multiline",
        _set(("haproxy", "extra"), {"global": ["nbthread 2\nfrontend evil"]}),
        "haproxy.extra.global[0]",
        "single line",
    ),
    (
        "extra-type",
        _set(("haproxy", "extra"), {"defaults": "option redispatch"}),
        "haproxy.extra.defaults",
        "must be of type array",
    ),
    (
        "render-with-install",
        _set(("kubernetes",), {"renderYamlToDirectory": "/tmp/out"}),
        "kubernetes.renderYamlToDirectory",
        "istio.install: false",
    ),
    (
        "render-with-context",
        _set(("kubernetes",), {"renderYamlToDirectory": "/tmp/out", "context": "prod"}),
        "kubernetes.renderYamlToDirectory",
        "istio.install: false",
    ),
    (
        "context-with-render",
        lambda r: (
            r["istio"].update(install=False),
            r.update(kubernetes={"renderYamlToDirectory": "/tmp/out", "context": "prod"}),
        ),
        "kubernetes.context",
        "cannot be combined",
    ),
    ("unknown-section", _set(("acess",), {}), "acess", "not a known key"),
    (
        "target-port-istio-status",
        _set(("gateway", "targetPorts"), {"http": 15021}),
        "gateway.targetPorts.http",
        "Istio's proxy uses itself (health checks)",
    ),
    (
        "target-port-envoy-admin",
        _set(("gateway", "targetPorts"), {"https": 15000}),
        "gateway.targetPorts.https",
        "Istio's proxy uses itself (Envoy admin)",
    ),
]


@pytest.mark.parametrize("mutate,key,words", [case[1:] for case in BAD_VALUES], ids=[case[0] for case in BAD_VALUES])
def test_bad_value_is_refused_naming_its_key(mutate, key, words):
    raw = valid_raw()
    mutate(raw)
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw)
    message = str(caught.value)
    assert message.startswith(f"source-ip-edge:{key}: "), message
    assert words in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "version", ["1.31.0-dev.eed52ebb66ad", "1.31.0-rc.1", "1.20.0-alpha.0", "1.19.0", "1.19.1-rc.0"]
)
def test_a_pre_release_chart_version_is_accepted_and_counts_after_the_releases_before_it(version):
    # The lab serves Istio's charts built from an untagged commit as 1.31.0-dev.<commit>.
    config = make_config(lambda r: (r["istio"].update(version=version), r["proxyProtocol"].update(mode="native")))
    assert config.istio.version == version
    assert config.istio.at_least((1, 19))


def test_min_version_rules_follow_semver_precedence_for_pre_releases():
    def istio(version):
        return make_config(_set(("istio", "version"), version)).istio

    assert istio("1.31.0-dev.eed52ebb66ad").at_least((1, 30))
    assert not istio("1.31.0-dev.eed52ebb66ad").at_least((1, 31))
    assert istio("1.31.0").at_least((1, 31))
    assert istio("1.31.1-rc.0").at_least((1, 31))
    assert not istio("1.30.9").at_least((1, 31))


def test_numtrustedproxies_above_zero_needs_declared_http_proxies():
    config = make_config(lambda r: r["istio"].update(numTrustedProxies=1, httpProxiesInFront=True))
    assert config.istio.trusted_proxy_hops == 1


def test_host_without_key_is_accepted_only_when_insecure_is_explicit():
    def mutate(raw):
        del raw["haproxy"]["hosts"][0]["hostKey"]
        raw["haproxy"]["hosts"][0]["insecureIgnoreHostKey"] = True

    assert make_config(mutate).haproxy.hosts[0].host_key is None


def test_lenient_is_allowed_in_envoyfilter_mode():
    assert make_config(_set(("proxyProtocol", "strict"), False)).proxy_protocol.strict is False


def test_missing_ssh_private_key_is_refused():
    with pytest.raises(ConfigError, match=r"^source-ip-edge:sshPrivateKey: is required"):
        parse_stack_config(valid_raw(), has_ssh_private_key=False)


def test_unknown_top_level_keys_are_refused():
    check_known_keys(["source-ip-edge:haproxy", "kubernetes:context", "source-ip-edge:sshPrivateKey"])
    with pytest.raises(ConfigError, match=r"^source-ip-edge:gatway: is not a known key"):
        check_known_keys(["source-ip-edge:gatway"])


def test_load_balancer_mode_sends_to_service_ports():
    config = make_config(lambda r: r["gateway"].update(serviceType="LoadBalancer", nodes=["192.0.2.99"]))
    assert config.gateway.backend_ports == {"http": 80, "https": 443, "status": 15021}


def test_a_large_list_that_merges_into_few_networks_is_accepted():
    hosts = [f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}/32" for i in range(131_072)]  # two /16s
    config = make_config(lambda r: r.update(access={"allow": hosts}))
    assert [str(n) for n in config.access.allow_blocks] == ["10.0.0.0/15"]
