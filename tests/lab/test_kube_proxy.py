"""The real kube-proxy (nftables mode) on the lab's nodes: hack/lab/control-plane.sh with
KUBE_PROXY_NODES runs it in each node's network namespace against the lab's API server. A Service's
NodePort is in a node's ruleset only while the Service exists; with externalTrafficPolicy: Local it is
forwarded on the node with a ready local endpoint and dropped on the node without one; meanwhile a
client no longer reaches what listens on the port on the node itself (as the lab's stand-ins do), and
reaches it again once the Service is gone. Also the gateway chart as the stack renders it with
gateway.nodeNames, on the real DaemonSet controller.

An instance of its own (CP_DIR, CP_NS, CP_NET and two node namespaces holding the kwok nodes'
InternalIPs), so no lab is touched. Every wait is bounded; the finalizer runs `down` and checks that no
kube-proxy, link or kube-proxy table is left.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.lab.test_control_plane import GATEWAYS, control_plane_instance, kubectl, namespaces, processes_with

CP_NS = "sietk-cp"
CP_NET = "198.18.13"
NODE_NAMESPACES = {"lab-node-1": "sietk-n1", "lab-node-2": "sietk-n2"}
CLIENT_NS = "sietk-c"
CLIENT_ADDRESSES = {"lab-node-1": "203.0.113.201", "lab-node-2": "203.0.113.202"}
NODE_PORT = 30980
SYNC_SECONDS = 60  # kube-proxy writes a change within about a second; the bound is generous


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=check)


@pytest.fixture(scope="module")
def cluster():
    """Two node namespaces, each holding its kwok node's InternalIP, then the control plane with a
    kube-proxy in each; at the end `down`, and the namespaces removed."""
    nodes = " ".join(f"{name}:{ns}:{GATEWAYS[name]}" for name, ns in NODE_NAMESPACES.items())
    instance = contextlib.contextmanager(control_plane_instance)
    try:
        for ns in [*NODE_NAMESPACES.values(), CLIENT_NS]:
            if ns in namespaces():
                _run("ip", "netns", "del", ns)
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        for i, (name, ns) in enumerate(NODE_NAMESPACES.items(), start=1):
            # The node's address on eth0; its other end is in the client's namespace, which reaches
            # each node from an address of its own (as HAProxy reaches the nodes from outside).
            client = CLIENT_ADDRESSES[name]
            _run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"to-n{i}", "netns", CLIENT_NS)
            _run("ip", "-n", ns, "addr", "add", f"{GATEWAYS[name]}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "route", "add", f"{client}/32", "dev", "eth0")
            _run("ip", "-n", CLIENT_NS, "addr", "add", f"{client}/32", "dev", f"to-n{i}")
            _run("ip", "-n", CLIENT_NS, "link", "set", f"to-n{i}", "up")
            _run("ip", "-n", CLIENT_NS, "route", "add", f"{GATEWAYS[name]}/32", "dev", f"to-n{i}", "src", client)
        with instance(CP_NS, CP_NET, "stack", {"KUBE_PROXY_NODES": nodes}) as info:
            yield info
        # After its `down` (checked there: no process, namespace or directory of the instance left).
        for ns in NODE_NAMESPACES.values():
            assert _tables(ns) == "", f"kube-proxy's tables are left in {ns}"
            assert "to-cp" not in _run("ip", "-n", ns, "-o", "link").stdout
    finally:
        for ns in [*NODE_NAMESPACES.values(), CLIENT_NS]:
            _run("ip", "netns", "del", ns, check=False)


def _tables(ns: str) -> str:
    return _run("ip", "netns", "exec", ns, "nft", "list", "tables").stdout.strip()


def _maps_holding(ns: str, port: int) -> dict[str, str]:
    """The maps of the node's ruleset (table ip kube-proxy) with an element for tcp . port, each with
    that element's verdict (`drop`, `goto <chain>`)."""
    ruleset = _run("ip", "netns", "exec", ns, "nft", "list", "table", "ip", "kube-proxy").stdout
    held = {}
    for name, body in re.findall(r"\bmap (\S+) \{(.*?)\n\t\}", ruleset, flags=re.S):
        element = re.search(rf"\btcp \. {port}\b[^,}}]*?: ([^,}}]+)", body)
        if element:
            held[name] = element.group(1).strip()
    return held


def _until(condition, seconds: float = SYNC_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()


@pytest.fixture
def listeners(request):
    """Something answering HTTP on the NodePort in each node's namespace, as the lab's gateway
    stand-ins answer on theirs; stopped by pid."""
    started = []
    for ns in NODE_NAMESPACES.values():
        process = subprocess.Popen(
            ["ip", "netns", "exec", ns, "python3", "-m", "http.server", str(NODE_PORT), "--bind", "0.0.0.0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        request.addfinalizer(lambda p=process: (p.terminate(), p.wait(timeout=10)))
        started.append(process)
    for name in NODE_NAMESPACES:
        assert _until(lambda name=name: _answer(name) == "200", 10), f"the listener on {name} did not answer"
    return started


def _answer(node: str) -> str:
    """The HTTP status the client gets from the node's NodePort; 000: no answer within a second."""
    proc = subprocess.run(
        ["ip", "netns", "exec", CLIENT_NS, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1",
         f"http://{GATEWAYS[node]}:{NODE_PORT}/"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return proc.stdout.strip()


SERVICE = f"""\
apiVersion: v1
kind: Service
metadata: {{name: np-probe, namespace: default}}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {{app: np-probe}}
  ports: [{{name: http, port: 80, targetPort: 8080, nodePort: {NODE_PORT}}}]
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: np-probe, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: np-probe}}
  template:
    metadata: {labels: {app: np-probe}}
    spec:
      nodeSelector: {kubernetes.io/hostname: lab-node-1}
      containers: [{name: probe, image: registry.invalid/probe:1, ports: [{containerPort: 8080}]}]
"""


def test_kube_proxy_runs_in_each_node_namespace_in_nftables_mode(cluster) -> None:
    for name, ns in NODE_NAMESPACES.items():
        pids = _run("ip", "netns", "pids", ns).stdout.split()
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") for pid in pids]
        commands = {cmdline.split("\0")[0] for cmdline in cmdlines}
        assert any(c.endswith("kube-proxy") for c in commands), (name, commands)
        assert "table ip kube-proxy" in _tables(ns)
        # Its pid is one the control plane's `down` stops (a file in its pids directory naming CP_DIR).
        assert any(str(cluster["dir"]) in cmdline for cmdline in cmdlines)
    log = (cluster["dir"] / "kube-proxy" / "lab-node-1.log").read_text()
    assert re.search(r'"Using nftables Proxier"|Using nftables Proxier', log), log[-3000:]


def test_a_services_node_port_is_in_the_ruleset_only_while_the_service_exists(cluster, listeners) -> None:
    kubectl(cluster, "apply", "-f", "-", stdin=DEPLOYMENT)
    kubectl(cluster, "rollout", "status", "deployment/np-probe", "--timeout=90s", timeout=120)
    # Before the Service: no node knows the port (kube-proxy is running: its table is there).
    for ns in NODE_NAMESPACES.values():
        assert "table ip kube-proxy" in _tables(ns)
        assert _maps_holding(ns, NODE_PORT) == {}, ns
    # ... and the port reaches what listens on the node, like the lab's stand-ins.
    assert {node: _answer(node) for node in NODE_NAMESPACES} == {"lab-node-1": "200", "lab-node-2": "200"}
    kubectl(cluster, "apply", "-f", "-", stdin=SERVICE)
    node_1, node_2 = NODE_NAMESPACES["lab-node-1"], NODE_NAMESPACES["lab-node-2"]

    # externalTrafficPolicy Local: forwarded where the ready endpoint runs; on the other node the
    # NodePort is known too, but what comes from outside the cluster is dropped.
    def forwarded(held: dict[str, str]) -> bool:
        return set(held) == {"service-nodeports"} and held["service-nodeports"].startswith("goto ")

    def dropped(held: dict[str, str]) -> bool:
        return held.get("no-endpoint-nodeports") == "drop" and "service-nodeports" in held

    assert _until(lambda: forwarded(_maps_holding(node_1, NODE_PORT))), _maps_holding(node_1, NODE_PORT)
    assert _until(lambda: dropped(_maps_holding(node_2, NODE_PORT))), _maps_holding(node_2, NODE_PORT)
    # kube-proxy owns the port now: node 2 drops it, node 1 forwards it to the pod's address (which
    # nothing answers here: no CNI); neither reaches the node's own listener any more.
    assert _until(
        lambda: {node: _answer(node) for node in NODE_NAMESPACES} == {"lab-node-1": "000", "lab-node-2": "000"}
    )
    endpoints = json.loads(
        kubectl(cluster, "get", "endpointslices", "-l", "kubernetes.io/service-name=np-probe", "-o", "json")
    )["items"]
    assert [e["nodeName"] for s in endpoints for e in s["endpoints"]] == ["lab-node-1"]
    held = {ns: _maps_holding(ns, NODE_PORT) for ns in (node_1, node_2)}
    print(f"NodePort {NODE_PORT} while the Service exists: {held}")
    kubectl(cluster, "delete", "service", "np-probe", "--wait=true", timeout=90)
    for ns in NODE_NAMESPACES.values():
        assert _until(lambda ns=ns: _maps_holding(ns, NODE_PORT) == {}), (ns, _maps_holding(ns, NODE_PORT))
    assert _until(
        lambda: {node: _answer(node) for node in NODE_NAMESPACES} == {"lab-node-1": "200", "lab-node-2": "200"}
    )
    kubectl(cluster, "delete", "deployment", "np-probe", "--wait=true", timeout=90)


def test_each_node_runs_one_kube_proxy_of_this_instance(cluster) -> None:
    # `down` stops them by pid and removes their tables and links (checked by the fixture after it).
    pids = processes_with(str(cluster["dir"] / "kube-proxy"))
    assert len(pids) == len(NODE_NAMESPACES), pids


# --- the gateway chart as the stack renders it with gateway.nodeNames, on the real controllers ----------


def _watch_events(text: str) -> list[dict]:
    """The objects of `kubectl get -w --output-watch-events -o json`, in the order the server sent them."""
    decoder, events, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return events
        event, i = decoder.raw_decode(text, i)
        events.append(event)


def test_the_rendered_gateway_daemonset_runs_on_the_named_node_and_rolls_with_a_surge(cluster, tmp_path) -> None:
    from components.istio_gateway.chart import gateway_values
    from components.istio_gateway.placement import gateway_daemonset_patch
    from tests.lab.test_control_plane import helm_for
    from tests.unit.conftest import make_config

    def one_named_node(raw):
        raw["gateway"].update(nodes=[GATEWAYS["lab-node-2"]], nodeNames={GATEWAYS["lab-node-2"]: "lab-node-2"})
        raw["istio"].update(
            version=cluster["chartVersion"], chartRepository=cluster["chartRepository"], gatewayName="gw-placed"
        )

    config = make_config(one_named_node)
    values = tmp_path / "values.json"
    values.write_text(json.dumps(gateway_values(config)))
    helm = helm_for(cluster, tmp_path / "helm")
    rendered = helm(
        "template", "gw-placed", "gateway", "--repo", cluster["chartRepository"], "--version", cluster["chartVersion"],
        "--namespace", "gw-place", "-f", str(values),
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    kubectl(cluster, "create", "namespace", "gw-place")
    kubectl(cluster, "apply", "-n", "gw-place", "-f", "-", stdin=rendered.stdout)
    patch = gateway_daemonset_patch(config)
    assert patch["metadata"]["name"] == "gw-placed"
    spec = json.dumps({"spec": patch["spec"]})  # in the test's namespace, not the stack's
    kubectl(cluster, "-n", "gw-place", "patch", "daemonset", "gw-placed", "--type=merge", "-p", spec)
    kubectl(cluster, "-n", "gw-place", "rollout", "status", "daemonset/gw-placed", "--timeout=90s", timeout=120)

    def pods() -> list[dict]:
        return json.loads(kubectl(cluster, "-n", "gw-place", "get", "pods", "-o", "json"))["items"]

    (first,) = pods()
    assert first["spec"]["nodeName"] == "lab-node-2"  # the named node only, though lab-node-1 is Ready too
    watch = subprocess.Popen(
        ["kubectl", "--kubeconfig", cluster["kubeconfig"], "-n", "gw-place", "get", "pods", "--watch-only",
         "--output-watch-events", "-o", "json"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1)  # the watch is established before the roll starts
        kubectl(
            cluster, "-n", "gw-place", "patch", "daemonset", "gw-placed", "--type=merge",
            "-p", '{"spec":{"template":{"metadata":{"annotations":{"roll":"1"}}}}}',
        )  # fmt: skip
        kubectl(cluster, "-n", "gw-place", "rollout", "status", "daemonset/gw-placed", "--timeout=90s", timeout=120)
        assert _until(
            lambda: [p["metadata"]["name"] for p in pods()] != [first["metadata"]["name"]] and len(pods()) == 1
        )
    finally:
        watch.terminate()
        out, _ = watch.communicate(timeout=30)
    events = _watch_events(out)
    old = first["metadata"]["name"]

    def what(event: dict) -> str | None:
        metadata = event["object"]["metadata"]
        if metadata["name"] != old and event["type"] == "ADDED":
            return "added-new"
        if metadata["name"] == old and metadata.get("deletionTimestamp"):
            return "old-leaving"
        return None

    order = [what(event) for event in events]
    print(f"gateway DaemonSet roll, pod events in order: {[o for o in order if o]}")
    # maxSurge 1 / maxUnavailable 0: the new pod exists before the old one is told to go.
    assert "added-new" in order and "old-leaving" in order, events
    assert order.index("added-new") < order.index("old-leaving")
    (after,) = pods()
    assert after["spec"]["nodeName"] == "lab-node-2"
    kubectl(cluster, "delete", "namespace", "gw-place", "--wait=true", timeout=120)
