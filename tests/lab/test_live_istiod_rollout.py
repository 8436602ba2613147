"""Rollouts observed, not assumed, on the lab-test stack with the
gateway chart. The gateway pods' ProxyConfig (read by Envoy at start only) carries
gatewayTopology: numTrustedProxies, and always the native PROXY parser, which the EnvoyFilter
replaces in envoyfilter mode (components/proxy_protocol/envoy_filter.py). So a numTrustedProxies change rolls the
pods through the real Deployment controller, and the new pods are ready before HAProxy's config
changes; strictness and the mode live in the EnvoyFilter, which istiod pushes to running pods, so
lenient -> strict and envoyfilter -> native roll nothing, and, sampled from the live istiod while
each update runs, never leave a listener HAProxy sends to without exactly one PROXY parser first.
Tests run in file order.
"""

from __future__ import annotations

import threading

import pytest
from pulumi import automation as auto

from hack.lab import gateway_xds
from tests.lab.conftest import STACK_NAME, api_time

CONFIG = "/etc/haproxy/haproxy.cfg"
NAMESPACE = "istio-system"
GATEWAY = "istio-ingressgateway"
PROXY_PROTOCOL = "envoy.filters.listener.proxy_protocol"


def _up(edge) -> auto.UpResult:
    result = edge.up()
    assert result.summary.result == "succeeded"
    return result


def _set(edge, key: str, value: str) -> None:
    edge.stack.set_config(f"source-ip-edge:{key}", auto.ConfigValue(value), path=True)


def _replica_sets(lab) -> dict[str, dict]:
    items = lab.kube_json("replicasets", "-n", NAMESPACE, "-l", f"app={GATEWAY}")["items"]
    return {rs["metadata"]["name"]: rs for rs in items}


def _ready_pods(lab, replica_set: str) -> list[dict]:
    pods = lab.kube_json("pods", "-n", NAMESPACE, "-l", f"app={GATEWAY}")["items"]
    return [
        pod
        for pod in pods
        if any(o["name"] == replica_set for o in pod["metadata"].get("ownerReferences", []))
        and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
    ]


def _parsers(facts: dict) -> list[tuple[str, int, int, bool | None]]:
    """Per listener HAProxy sends to: (name, proxy_protocol filters, its position, allow without)."""
    return [
        (
            listener["name"],
            listener["proxyProtocolCount"],
            listener["listenerFilters"].index(PROXY_PROTOCOL) if PROXY_PROTOCOL in listener["listenerFilters"] else -1,
            listener["allowRequestsWithoutProxyProtocol"],
        )
        for listener in facts["listeners"]
        if listener["frontend"]
    ]


@pytest.fixture(scope="module")
def envoyfilter_strict(edge):
    _set(edge, "proxyProtocol.mode", "envoyfilter")
    _set(edge, "proxyProtocol.strict", "true")
    _up(edge)
    return edge


def test_a_proxy_config_change_rolls_the_gateway_and_haproxy_changes_after_the_new_pods_are_ready(
    envoyfilter_strict,
) -> None:
    """numTrustedProxies 0 -> 1 changes the pods' ProxyConfig: a new ReplicaSet through the
    Deployment controller. Changed in the same update, HAProxy's PROXY version goes live only after
    the new pods were ready."""
    edge, lab = envoyfilter_strict, envoyfilter_strict.lab
    before = _replica_sets(lab)
    _set(edge, "istio.numTrustedProxies", "1")
    _set(edge, "istio.httpProxiesInFront", "true")
    _set(edge, "haproxy.proxyProtocolVersion", "1")
    try:
        _up(edge)
        after = _replica_sets(lab)
        new = [name for name in after if name not in before or int(before[name]["spec"]["replicas"] or 0) == 0]
        active = [name for name in new if int(after[name]["spec"]["replicas"] or 0) > 0]
        assert len(active) == 1, {n: rs["spec"]["replicas"] for n, rs in after.items()}
        template = after[active[0]]["spec"]["template"]["metadata"]["annotations"]
        assert '"numTrustedProxies": 1' in template["proxy.istio.io/config"], template
        for name, rs in after.items():
            if name != active[0]:
                assert int(rs["spec"]["replicas"] or 0) == 0, (name, "the old pods are scaled down")
        config = lab.host_path(CONFIG)
        assert "send-proxy " in config.read_text() or "send-proxy\n" in config.read_text()
        changed_at = config.stat().st_mtime
        pods = _ready_pods(lab, active[0])
        assert pods
        for pod in pods:
            ready = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"][0]
            assert api_time(ready["lastTransitionTime"]) <= changed_at, (pod["metadata"]["name"], changed_at)
        answer = gateway_xds.ask(lab, STACK_NAME, live=True)
        assert answer.returncode == 0, answer.output[-3000:]
        assert {tuple(listener["xffNumTrustedHops"]) for listener in answer.facts["listeners"]} == {(1,)}
    finally:
        _set(edge, "istio.numTrustedProxies", "0")
        _set(edge, "istio.httpProxiesInFront", "false")
        _set(edge, "haproxy.proxyProtocolVersion", "2")
    _up(edge)


def test_lenient_then_strict_and_a_mode_switch_never_leave_haproxy_facing_a_listener_without_a_parser(
    envoyfilter_strict,
) -> None:
    """The two-update enablement, then envoyfilter -> native and back, sampled from the live istiod
    while each update runs: every answer has one proxy_protocol filter first on every listener
    HAProxy sends to; lenient after the first update, strict after the second. None of the updates
    rolls the pods (no other active ReplicaSet)."""
    edge, lab = envoyfilter_strict, envoyfilter_strict.lab
    render_dirs = {}
    samples: list[tuple[str, list]] = []

    def sample_while(step: str, update) -> None:
        done = threading.Event()

        def sampler() -> None:
            n = 0
            while not done.is_set() and n < 30:
                answer = gateway_xds.ask(lab, STACK_NAME, live=True, render_dir=render_dirs["now"], tag=f"-sample{n}")
                samples.append((step, _parsers(answer.facts) if answer.facts else [("no answer", 0, -1, None)]))
                n += 1

        thread = threading.Thread(target=sampler)
        thread.start()
        try:
            update()
        finally:
            done.set()
            thread.join(timeout=120)

    replica_sets = {name for name, rs in _replica_sets(lab).items() if int(rs["spec"]["replicas"] or 0) > 0}
    # Strict now; the enablement from scratch is lenient first: go lenient, then strict again;
    # then the mode and back. After each update, the live answer holds the new setting.
    steps = [
        ("to lenient", "proxyProtocol.strict", "false"),
        ("to strict", "proxyProtocol.strict", "true"),
        ("to native", "proxyProtocol.mode", "native"),
        ("to envoyfilter", "proxyProtocol.mode", "envoyfilter"),
    ]
    for step, key, value in steps:
        render_dirs["now"] = gateway_xds.render(lab, STACK_NAME)
        _set(edge, key, value)
        sample_while(step, lambda: _up(edge))
        after = gateway_xds.ask(lab, STACK_NAME, live=True)
        assert after.returncode == 0, (step, after.output[-3000:])
        if key == "proxyProtocol.strict":
            assert {p[3] for p in _parsers(after.facts)} == {value == "false"}, step
        else:
            assert after.facts["expected"]["native"] is (value == "native"), step

    print(f"\nlive samples during the four updates: {len(samples)} ({', '.join(step for step, _ in samples)})")
    assert {step for step, _ in samples} == {"to lenient", "to strict", "to native", "to envoyfilter"}
    for step, listeners in samples:
        assert listeners, step
        for name, count, position, _ in listeners:
            assert count == 1 and position == 0, (step, name, count, position)
    assert {name for name, rs in _replica_sets(lab).items() if int(rs["spec"]["replicas"] or 0) > 0} == replica_sets
