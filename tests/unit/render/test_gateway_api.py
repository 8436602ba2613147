"""The Gateway API builders: the Gateway, the Service overlay ConfigMap, targetRefs attachment of
our Istio objects, the pinned CRDs, and the refusals of combinations gateway-api cannot serve."""

from __future__ import annotations

import json

import pytest
import yaml

from components.config import GATEWAY_API_VERSION, ConfigError
from components.edge.outputs import stack_outputs
from components.istio_gateway.chart import gateway_release
from components.istio_gateway.gateway_api import gateway, gateway_parameters
from components.istio_mesh.gateway_api_crds import gateway_api_install, required_crds
from components.istio_mesh.releases import control_plane_releases
from components.istio_objects import generated_name
from components.proxy_protocol.envoy_filter import PROXY_CONFIG_ANNOTATION, envoy_filter, gateway_deployment_patch
from components.source_ip_policy.policies import authorization_policies
from components.trusted_peer_lock.envoy_filter import trusted_peer_filter
from tests.unit.conftest import make_config

TARGET_REFS = [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "istio-ingressgateway"}]


def _gateway_api(raw):
    raw["gateway"]["api"] = "gateway-api"


def _config(*mutations):
    def mutate(raw):
        _gateway_api(raw)
        for m in mutations:
            m(raw)

    return make_config(mutate)


def test_gateway_listens_on_the_ports_haproxy_sends_to_with_https_passed_through():
    spec = gateway(_config())["spec"]
    assert spec["gatewayClassName"] == "istio"
    http, https = spec["listeners"]
    assert (http["name"], http["port"], http["protocol"]) == ("http", 80, "HTTP")
    assert (https["name"], https["port"], https["protocol"], https["tls"]) == (
        "https",
        443,
        "TLS",
        {"mode": "Passthrough"},
    )
    assert http["allowedRoutes"] == {"namespaces": {"from": "Same"}}


def test_gateway_listener_ports_follow_target_ports_and_frontends():
    def mutate(raw):
        raw["gateway"]["targetPorts"] = {"http": 8080, "https": 8443}
        raw["haproxy"]["frontends"] = [{"name": "tls", "bind": ":443", "gatewayPort": "https"}]

    listeners = gateway(_config(mutate))["spec"]["listeners"]
    assert [(listener["name"], listener["port"]) for listener in listeners] == [("https", 8443)]


def test_terminate_mode_names_its_certificate_secrets():
    https = gateway(
        _config(lambda r: r["gateway"].update(httpsTls={"mode": "Terminate", "certificateSecrets": ["shop-cert"]}))
    )
    listener = https["spec"]["listeners"][1]
    assert listener["protocol"] == "HTTPS"
    assert listener["tls"] == {
        "mode": "Terminate",
        "certificateRefs": [{"group": "", "kind": "Secret", "name": "shop-cert"}],
    }


def test_allowed_routes_selector_takes_the_namespace_labels():
    config = _config(
        lambda r: r["gateway"].update(allowedRoutes={"namespaces": "Selector", "namespaceLabels": {"edge": "yes"}})
    )
    assert gateway(config)["spec"]["listeners"][0]["allowedRoutes"] == {
        "namespaces": {"from": "Selector", "selector": {"matchLabels": {"edge": "yes"}}}
    }


def test_infrastructure_annotations_carry_the_pods_proxy_config_in_both_modes():
    envoyfilter_mode = gateway(_config())["spec"]["infrastructure"]["annotations"]
    native_mode = gateway(_config(lambda r: r.update(proxyProtocol={"mode": "native"})))["spec"]["infrastructure"][
        "annotations"
    ]
    assert json.loads(native_mode[PROXY_CONFIG_ANNOTATION]) == {
        "gatewayTopology": {"numTrustedProxies": 0, "proxyProtocol": {}}
    }
    assert envoyfilter_mode == native_mode  # a mode switch never rolls the generated pods


def test_generated_service_is_a_node_port_service_with_pinned_ports_through_parameters_ref():
    config = _config()
    gw = gateway(config)
    assert gw["metadata"]["annotations"] == {
        "networking.istio.io/service-type": "NodePort",
        # pulumi up waits for istiod to program it: a NodePort another Service holds fails the update.
        "pulumi.com/waitFor": "condition=Programmed",
        "pulumi.com/timeoutSeconds": "300",
    }
    ref = gw["spec"]["infrastructure"]["parametersRef"]
    parameters = gateway_parameters(config)
    assert (ref["group"], ref["kind"], ref["name"]) == ("", "ConfigMap", parameters["metadata"]["name"])
    assert parameters["metadata"]["namespace"] == gw["metadata"]["namespace"]
    overlay = yaml.safe_load(parameters["data"]["service"])
    assert overlay == {
        "spec": {
            "externalTrafficPolicy": "Local",
            "ports": [
                {"port": 15021, "nodePort": 30021},
                {"port": 80, "nodePort": 30080},
                {"port": 443, "nodePort": 30443},
            ],
        }
    }
    assert generated_name(config) == "istio-ingressgateway-istio"


def test_load_balancer_overlay_sets_no_node_ports_and_haproxy_sends_to_listener_ports():
    def mutate(raw):
        raw["gateway"].update(
            serviceType="LoadBalancer", nodes=["192.0.2.99"], targetPorts={"http": 8080, "https": 8443}
        )

    config = _config(mutate)
    assert yaml.safe_load(gateway_parameters(config)["data"]["service"]) == {"spec": {"externalTrafficPolicy": "Local"}}
    assert config.gateway.backend_ports == {"http": 8080, "https": 8443, "status": 15021}


def test_istio_objects_attach_to_the_gateway_by_target_refs_never_a_selector():
    config = _config(
        lambda r: r["access"].update(
            allow=["198.51.100.0/24"], deny=["198.51.100.66/32"], trustedPeers=["203.0.113.10/32"]
        )
    )
    objects = [envoy_filter(config), trusted_peer_filter(config), *authorization_policies(config)]
    for obj in objects:
        assert obj["spec"]["targetRefs"] == TARGET_REFS, obj["metadata"]["name"]
        assert "selector" not in obj["spec"] and "workloadSelector" not in obj["spec"]
    lenient = envoy_filter(_config(lambda r: r.update(proxyProtocol={"mode": "envoyfilter", "strict": False})))
    assert [p["patch"]["operation"] for p in lenient["spec"]["configPatches"]] == [
        "REMOVE",
        "INSERT_FIRST",
        "INSERT_FIRST",
    ]
    assert (
        lenient["spec"]["configPatches"][1]["patch"]["value"]["typed_config"]["allow_requests_without_proxy_protocol"]
        is True
    )


def test_istio_objects_are_named_after_the_generated_workload_so_a_mode_switch_adds_them_beside():
    """Switching gateway.api creates the other mode's objects next to the old ones (which keep the
    old gateway's PROXY parser and policies until HAProxy has moved) instead of rewriting them."""
    chart = make_config()
    gwapi = _config()

    def names(config):
        return {
            o["metadata"]["name"]
            for o in [envoy_filter(config), trusted_peer_filter(config), *authorization_policies(config)]
            if o
        }

    assert all(name.startswith(f"{generated_name(gwapi)}-") for name in names(gwapi))
    assert not any(name.startswith(f"{generated_name(gwapi)}-") for name in names(chart))
    assert names(chart).isdisjoint(names(gwapi))


def test_no_gateway_chart_and_no_deployment_patch():
    assert [r.chart for r in control_plane_releases(_config())] == ["base", "istiod"]
    assert gateway_release(_config()) is None
    assert gateway_deployment_patch(_config(lambda r: r["istio"].update(install=False))) is None


def test_installed_istio_gets_the_pinned_standard_crds_adopted_istio_only_checks_them():
    install = gateway_api_install(_config())
    assert {o["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"] for o in install} == {
        GATEWAY_API_VERSION
    }
    assert {o["metadata"]["annotations"]["gateway.networking.k8s.io/channel"] for o in install} == {"standard"}
    kinds = {o["metadata"]["name"] for o in install if o["kind"] == "CustomResourceDefinition"}
    assert set(required_crds(_config())) <= kinds
    adopted = _config(lambda r: r["istio"].update(install=False))
    assert gateway_api_install(adopted) == []
    assert required_crds(adopted) == [
        "gatewayclasses.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "httproutes.gateway.networking.k8s.io",
        "tlsroutes.gateway.networking.k8s.io",
    ]
    assert gateway_api_install(make_config()) == [] and gateway(make_config()) is None


def test_outputs_describe_the_gateway_and_its_generated_service():
    config = _config()
    described = stack_outputs(config, "")["gateway"]
    assert described["kind"] == "Gateway" and described["api"] == "gateway-api"
    assert described["service"] == {
        "name": "istio-ingressgateway-istio",
        "type": "NodePort",
        "externalTrafficPolicy": "Local",
        "nodePorts": {"http": 30080, "https": 30443, "status": 30021},
    }
    assert described["labels"]["gateway.networking.k8s.io/gateway-name"] == "istio-ingressgateway"
    assert stack_outputs(make_config(), "")["gateway"]["kind"] == "Deployment"


@pytest.mark.parametrize(
    "mutate,key,words",
    [
        (lambda r: r["istio"].update(gatewayLabels={"app": "edge"}), "istio.gatewayLabels", "gateway-chart key"),
        (lambda r: r["istio"].update(version="1.25.4"), "gateway.api", "needs Istio >= 1.26"),
        (lambda r: r["istio"].update(version="1.30.1"), "gateway.api", "pinned for Istio 1.31"),
        (
            lambda r: (r["istio"].update(install=False), r.update(kubernetes={"renderYamlToDirectory": "/tmp/out"})),
            "kubernetes.renderYamlToDirectory",
            "Gateway API CRDs are checked in the cluster",
        ),
        (
            lambda r: r["gateway"].update(allowedRoutes={"namespaces": "Selector"}),
            "gateway.allowedRoutes.namespaceLabels",
            "at least one label",
        ),
        (
            lambda r: r["gateway"].update(allowedRoutes={"namespaceLabels": {"a": "b"}}),
            "gateway.allowedRoutes.namespaceLabels",
            "only used with namespaces: Selector",
        ),
        (
            lambda r: r["gateway"].update(httpsTls={"mode": "Terminate"}),
            "gateway.httpsTls.certificateSecrets",
            "must name the TLS Secret",
        ),
        (
            lambda r: r["gateway"].update(httpsTls={"certificateSecrets": ["c"]}),
            "gateway.httpsTls.certificateSecrets",
            "only used with mode: Terminate",
        ),
        (lambda r: r["gateway"].update(api="gateway-apis"), "gateway.api", "is not one of"),
        (
            lambda r: r["gateway"].update(allowedRoutes={"namespaces": "Some"}),
            "gateway.allowedRoutes.namespaces",
            "is not one of",
        ),
        (
            lambda r: r["gateway"].update(
                allowedRoutes={"namespaces": "Selector", "namespaceLabels": {"team routes": "yes"}}
            ),
            "gateway.allowedRoutes.namespaceLabels",
            '"team routes" is not a Kubernetes label key',
        ),
        (
            lambda r: r["gateway"].update(
                allowedRoutes={"namespaces": "Selector", "namespaceLabels": {"Example.com/routes": "yes"}}
            ),
            "gateway.allowedRoutes.namespaceLabels",
            "is not a Kubernetes label key",
        ),
        (
            lambda r: r["gateway"].update(
                allowedRoutes={"namespaces": "Selector", "namespaceLabels": {"routes": "not ok"}}
            ),
            "gateway.allowedRoutes.namespaceLabels.routes",
            "is not a valid name",
        ),
        (lambda r: r["gateway"].update(httpsTls={"mode": "Reencrypt"}), "gateway.httpsTls.mode", "is not one of"),
        (
            lambda r: r["gateway"].update(
                httpsTls={"mode": "Terminate", "certificateSecrets": ["edge-tls", "edge-tls"]}
            ),
            "gateway.httpsTls.certificateSecrets[1]",
            "duplicate entry edge-tls",
        ),
        (
            lambda r: r["gateway"].update(httpsTls={"mode": "Terminate", "certificateSecrets": ["Edge_TLS"]}),
            "gateway.httpsTls.certificateSecrets[0]",
            "is not a valid name",
        ),
        (
            lambda r: r["gateway"].update(
                httpsTls={"mode": "Terminate", "certificateSecrets": [f"tls-{i}" for i in range(65)]}
            ),
            "gateway.httpsTls.certificateSecrets",
            "at most 64 certificateRefs",
        ),
        (
            lambda r: (
                r["haproxy"].update(frontends=[{"name": "http", "bind": ":80", "gatewayPort": "http"}]),
                r["gateway"].update(httpsTls={"mode": "Terminate", "certificateSecrets": ["edge-tls"]}),
            ),
            "gateway.httpsTls",
            "no haproxy.frontends entry has gatewayPort: https",
        ),
        (
            lambda r: r["gateway"].update(targetPorts={"https": 15021}),
            "gateway.targetPorts.https",
            "Istio's proxy uses itself (health checks)",
        ),
        (
            lambda r: r["istio"].update(gatewayName="1edge"),
            "istio.gatewayName",
            "'1edge-istio', which is not a valid Service name",
        ),
        (lambda r: r["istio"].update(gatewayName="e" * 58), "istio.gatewayName", "at most 57 characters"),
    ],
    ids=[
        "chart-labels",
        "old-istio",
        "other-istio-line-installed",
        "render-to-directory",
        "selector-without-labels",
        "labels-without-selector",
        "terminate-without-secret",
        "secret-with-passthrough",
        "unknown-api",
        "unknown-route-namespaces",
        "label-key-with-space",
        "label-key-prefix-upper-case",
        "label-value-with-space",
        "unknown-tls-mode",
        "duplicate-secret",
        "secret-name-not-dns",
        "too-many-secrets",
        "https-tls-without-https-frontend",
        "listener-on-istio-status-port",
        "service-name-starts-with-digit",
        "service-name-too-long",
    ],
)
def test_bad_gateway_api_combinations_are_refused_naming_the_key(mutate, key, words):
    with pytest.raises(ConfigError) as caught:
        _config(mutate)
    message = str(caught.value)
    assert message.startswith(f"source-ip-edge:{key}: "), message
    assert words in message and "\n" not in message


@pytest.mark.parametrize(
    "mutate,key",
    [
        (lambda r: r["gateway"].update(allowedRoutes={"namespaces": "All"}), "gateway.allowedRoutes"),
        (
            lambda r: r["gateway"].update(httpsTls={"mode": "Terminate", "certificateSecrets": ["c"]}),
            "gateway.httpsTls",
        ),
    ],
)
def test_gateway_api_keys_are_refused_with_the_chart(mutate, key):
    with pytest.raises(ConfigError, match=rf"^source-ip-edge:{key}: is only used with gateway.api: gateway-api$"):
        make_config(mutate)


def test_an_adopted_istio_of_another_line_may_use_gateway_api():
    config = _config(lambda r: r["istio"].update(install=False, version="1.26.3"))
    assert config.gateway.api == "gateway-api"


@pytest.mark.parametrize("version", ["1.26.0", "1.27.2"])
def test_gateway_api_is_accepted_from_the_first_istio_that_reads_parameters_ref(version):
    # istiod reads spec.infrastructure.parametersRef since 1.26.0 (istio/istio#55283).
    assert _config(lambda r: r["istio"].update(install=False, version=version)).istio.version == version


def test_gateway_api_is_refused_on_a_pre_release_of_1_26():
    with pytest.raises(ConfigError, match=r"^source-ip-edge:gateway.api: gateway-api needs Istio >= 1.26 "):
        _config(lambda r: r["istio"].update(install=False, version="1.26.0-rc.0"))


def test_the_longest_gateway_name_istiod_can_name_a_service_after_is_accepted():
    config = _config(lambda r: r["istio"].update(gatewayName="e" * 57))
    assert len(generated_name(config)) == 63


@pytest.mark.parametrize("label_key", ["routes", "source-ip-edge/routes", "team.example.com/routes", "a" * 63])
def test_kubernetes_label_keys_are_accepted_for_route_namespaces(label_key):
    config = _config(
        lambda r: r["gateway"].update(allowedRoutes={"namespaces": "Selector", "namespaceLabels": {label_key: "yes"}})
    )
    assert dict(config.gateway.allowed_route_labels) == {label_key: "yes"}
