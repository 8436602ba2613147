"""The gateway's listeners as the lab's running istiod serves them (a real control plane).

gateway-preview connects to the lab-test control plane's istiod over xDS as each ready gateway pod,
with the node identity and metadata pilot-agent computes from that pod (hack/lab/gateway_xds.py,
hack/gateway-preview/live.go), and runs the checks `make gateway-test` runs offline. The tests run last
in the layer, on the stack the earlier files converged.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from hack.lab import gateway_xds
from hack.lab.labkit import REPO
from tests.lab.conftest import STACK_NAME

PROXY_PROTOCOL = "envoy.filters.listener.proxy_protocol"

# The widely copied EnvoyFilter (the seed's): applyTo LISTENER, MERGE of listener_filters, a
# proxy_protocol filter for every listener of the gateway, appended after Istio's own filters.
BLOG_ENVOY_FILTER_SPEC = yaml.safe_load(
    (REPO / "hack" / "gateway-preview" / "testdata" / "blog-envoyfilter.yaml").read_text()
)["spec"]


@pytest.fixture(scope="module")
def converged(edge):
    result = edge.up()
    assert result.summary.result == "succeeded"
    return edge


def _fronted(facts: dict) -> list[dict]:
    listeners = [listener for listener in facts["listeners"] if listener["frontend"]]
    assert listeners, "no listener HAProxy sends to in istiod's answer"
    return listeners


def test_live_istiod_serves_the_gateway_what_the_config_says(converged) -> None:
    answer = gateway_xds.ask(converged.lab, STACK_NAME, live=True)
    assert answer.returncode == 0, answer.output[-3000:]
    assert answer.failed_checks == {}
    assert "gateway pod " in answer.output and "router~" in answer.output  # asked as a gateway pod
    ready = [
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in converged.lab.kube_json("pods", "-n", "istio-system", "-l", "istio=ingressgateway")["items"]
        if "deletionTimestamp" not in p["metadata"]
        and p["status"].get("phase") == "Running"
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]
    # Every Running, Ready gateway pod that is not going away, as pilot-agent would connect.
    assert sorted(answer.facts["pods"]) == sorted(ready) and ready, (answer.facts["pods"], ready)
    want = answer.facts["expected"]
    for listener in _fronted(answer.facts):
        assert listener["listenerFilters"][0] == PROXY_PROTOCOL and listener["proxyProtocolCount"] == 1, listener
        assert listener["allowRequestsWithoutProxyProtocol"] is (not want["strict"]), listener
        assert listener["xffNumTrustedHops"] == [want["xffNumTrustedHops"]], listener
        assert listener["remoteIpAllow"] == want["allow"] and want["allow"], listener
        assert listener["remoteIpDeny"] == want["deny"] and want["deny"], listener
        assert listener["directPeersOnly"] == want["trustedPeers"] and want["trustedPeers"], listener


def test_forged_addresses_are_refused_on_the_live_listeners(converged) -> None:
    """A visitor's forged X-Forwarded-For does not change the address RBAC sees (use_remote_address,
    xff_num_trusted_hops 0), and a PROXY header sent straight to the gateway by a peer that is not
    an HAProxy host is refused by the direct_remote_ip lock: verdicts of the live listeners' RBAC."""
    answer = gateway_xds.ask(converged.lab, STACK_NAME, live=True)
    assert answer.returncode == 0, answer.output[-3000:]
    probes = answer.facts["probes"]
    forged = [p for p in probes if "forges X-Forwarded-For" in p["name"]]
    stranger = [p for p in probes if "not HAProxy" in p["name"]]
    assert forged and stranger, [p["name"] for p in probes]
    for probe in forged:
        assert probe["xForwardedFor"] and probe["effectiveRemoteIp"] == probe["proxySource"], probe
        assert probe["allowed"] is False and "deny" in probe["decidedBy"], probe
    for probe in stranger:
        assert probe["allowed"] is False and "direct-peer-not-trusted" in probe["decidedBy"], probe
    assert all(p["allowed"] == p["wantAllowed"] for p in probes)


COMPARED_FACTS = {"checks", "listeners", "probes", "probesSkipped", "expected"}


def test_live_and_offline_answers_agree(converged) -> None:
    """What `make gateway-preview` computes offline for the stack is what the running istiod serves:
    the same listeners, filters, XFF hops, RBAC addresses and probe verdicts."""
    live = gateway_xds.ask(converged.lab, STACK_NAME, live=True)
    offline = gateway_xds.ask(converged.lab, STACK_NAME, live=False)
    assert live.returncode == 0 and offline.returncode == 0, (live.output[-2000:], offline.output[-2000:])
    # Which pods istiod was asked as is the live answer's own (offline there are none), not a fact
    # compared; every other field of the facts (hack/gateway-preview/facts.go) is.
    assert live.facts.get("pods") and "pods" not in offline.facts
    assert set(live.facts) == COMPARED_FACTS | {"pods"} and set(offline.facts) == COMPARED_FACTS
    for key in sorted(COMPARED_FACTS):
        assert live.facts[key] == offline.facts[key], key


def test_the_seeds_listener_merge_envoyfilter_fails_the_live_check(converged) -> None:
    """The live check can fail: the stack's proxy-protocol EnvoyFilter edited in the API server into
    the seed's (applyTo LISTENER, MERGE) is accepted by istiod's webhook, served to the gateway, and
    caught; the stack's own EnvoyFilter put back, the check passes again."""
    lab = converged.lab
    filters = lab.kube_json("envoyfilters.networking.istio.io", "--all-namespaces")["items"]
    ours = [f for f in filters if f["metadata"]["name"].endswith("-proxy-protocol")]
    assert len(ours) == 1, [f["metadata"]["name"] for f in filters]
    original = ours[0]
    wrong = copy.deepcopy(original)
    wrong["spec"] = {**BLOG_ENVOY_FILTER_SPEC, "workloadSelector": original["spec"]["workloadSelector"]}
    try:
        replaced = lab.kubectl("replace", "-f", "-", input_json=wrong)
        assert replaced.returncode == 0, replaced.stderr
        answer = gateway_xds.ask(lab, STACK_NAME, live=True)
        assert answer.returncode != 0
        assert answer.failed_checks.get("listener filters"), answer.output[-3000:]
    finally:
        current = lab.kube_json(
            "envoyfilters.networking.istio.io", "-n", original["metadata"]["namespace"], original["metadata"]["name"]
        )
        current["spec"] = original["spec"]
        restored = lab.kubectl("replace", "-f", "-", input_json=current)
        assert restored.returncode == 0, restored.stderr
    again = gateway_xds.ask(lab, STACK_NAME, live=True)
    assert again.returncode == 0, again.output[-3000:]
