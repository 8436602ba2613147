"""The lab layer: the real Pulumi engine (Automation API) converges a real HAProxy host over SSH.

The tests run in file order and share one stack; each states the behaviour it checks.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from pulumi import automation as auto

from components.haproxy_host.haproxy_cfg import ADMIN_SOCKET
from hack.lab.haproxy_runtime import runtime_command, wait_until_checked
from hack.lab.labkit import load_result
from tests.lab.conftest import (
    STACK_NAME,
    assert_visitors_arrive,
    backend_files,
    cluster_left_after_destroy,
    host_snapshot,
    shared_texts,
)

CONFIG = "/etc/haproxy/haproxy.cfg"
ORIGINAL = "/etc/haproxy/haproxy.cfg.source-ip-edge.orig"
GATEWAY_2 = "192.0.2.51"


def _preview(edge, **kwargs) -> auto.PreviewResult:
    return edge.stack.preview(color="never", on_output=edge.collect, **kwargs)


def _file_text(path: Path) -> str:
    raw = path.read_bytes()
    return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode(errors="replace")


def test_up_installs_haproxy_and_the_visitor_address_arrives(edge) -> None:
    assert edge.lab.ssh("command -v haproxy").returncode != 0, "the lab host starts without haproxy"
    result = edge.up()
    assert result.summary.result == "succeeded"
    assert edge.lab.master_pid() is not None
    assert_visitors_arrive(edge.lab)
    outputs = result.outputs
    assert "haproxyHosts" in outputs and "haproxyConfigSha256" in outputs


HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
ENVOY_FILTER = "kubernetes:networking.istio.io/v1alpha3:EnvoyFilter"
AUTHORIZATION_POLICY = "kubernetes:security.istio.io/v1:AuthorizationPolicy"


def _state_resources() -> list[dict]:
    exported = subprocess.run(
        ["pulumi", "stack", "export", "--stack", STACK_NAME],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return json.loads(exported)["deployment"]["resources"]


def test_state_holds_three_awaited_helm_releases_and_our_istio_objects_in_the_real_api_server(edge) -> None:
    resources = _state_resources()
    releases = [r for r in resources if r["type"] == HELM_RELEASE]
    assert [r["outputs"]["chart"] for r in releases] == ["base", "istiod", "gateway"]
    for release in releases:
        assert not release["inputs"].get("skipAwait"), release["urn"]  # awaited: Helm's wait
        assert release["outputs"]["status"]["status"] == "deployed", release["outputs"]["status"]
        assert release["outputs"]["repositoryOpts"]["repo"].startswith("http://198.18."), "the lab's chart repository"
    filters = [r for r in resources if r["type"] == ENVOY_FILTER]
    policies = [r for r in resources if r["type"] == AUTHORIZATION_POLICY]
    assert "istio-ingressgateway-proxy-protocol" in {r["outputs"]["metadata"]["name"] for r in filters}
    assert {r["outputs"]["metadata"]["name"] for r in policies} == {
        "istio-ingressgateway-source-ip-allow",
        "istio-ingressgateway-source-ip-deny",
    }
    # Applied to the lab's API server, not rendered to a folder.
    providers = [r for r in resources if r["type"] == "pulumi:providers:kubernetes"]
    assert providers and not any(p["inputs"].get("renderYamlToDirectory") for p in providers)
    for kind, found in (
        ("envoyfilters.networking.istio.io", filters),
        ("authorizationpolicies.security.istio.io", policies),
    ):
        in_cluster = edge.lab.kube_json(kind, "-n", "istio-system")["items"]
        assert {o["metadata"]["uid"] for o in in_cluster} == {r["outputs"]["metadata"]["uid"] for r in found}, kind
    # The gateway's pods exist and carry istiod's proxy: the injection webhook of the real istiod ran.
    pods = edge.lab.kube_json("pods", "-n", "istio-system", "-l", "istio=ingressgateway")["items"]
    assert pods and all("proxyv2" in p["spec"]["containers"][0]["image"] for p in pods), pods


def test_gateway_service_has_the_node_ports_the_config_pins(edge) -> None:
    pinned = json.loads(edge.stack.get_config("source-ip-edge:gateway").value)["nodePorts"]
    service = edge.lab.kube_json("service", "-n", "istio-system", "istio-ingressgateway")
    assert service["spec"]["type"] == "NodePort" and service["spec"]["externalTrafficPolicy"] == "Local"
    by_port = {p["port"]: p["nodePort"] for p in service["spec"]["ports"]}
    assert by_port == {80: pinned["http"], 443: pinned["https"], 15021: pinned["status"]}, service["spec"]["ports"]


def test_haproxy_reports_every_gateway_up_after_a_passed_check(edge) -> None:
    # From HAProxy's runtime API on the host (its admin socket, reached from the lab machine through
    # the host's root), not from a log line. The stand-ins answer like Envoy's status listener
    # (docs/stand-ins.md), so an HTTP/1.0 check would leave every server DOWN with L7STS 426.
    states = wait_until_checked(edge.lab.host_path(ADMIN_SOCKET), timeout=15)
    assert {state.backend for state in states} == {"gateway_http", "gateway_https"}
    assert all((s.status, s.check_status, s.check_code) == ("UP", "L7OK", "200") for s in states), states


def test_second_preview_reports_no_changes_and_runs_no_remote_command(edge) -> None:
    logins = edge.sshd_logins()
    master = edge.lab.master_pid()
    preview = _preview(edge, expect_no_changes=True)
    assert set(preview.change_summary) == {"same"}, preview.change_summary
    started = time.monotonic()
    result = edge.up(expect_no_changes=True)
    print(f"no-op pulumi up: {time.monotonic() - started:.1f}s")
    assert set(result.summary.resource_changes or {}) == {"same"}, result.summary.resource_changes
    assert edge.sshd_logins() == logins, "a converged stack must not run anything on the host"
    assert edge.lab.master_pid() == master


def test_config_change_shows_readable_lines_and_reloads_seamlessly_under_load(edge) -> None:
    stack = edge.stack
    stack.set_config("source-ip-edge:haproxy.balance", auto.ConfigValue("leastconn"), path=True)
    stack.set_config("source-ip-edge:gateway.nodes[1]", auto.ConfigValue(GATEWAY_2), path=True)

    preview = _preview(edge, diff=True)
    assert preview.change_summary.get("update", 0) >= 1, preview.change_summary
    diff = preview.stdout
    # The changed haproxy.cfg lines themselves, not only a hash.
    assert re.search(r"^\s*[-~].*balance roundrobin", diff, re.M), diff
    assert re.search(r"^\s*[+~].*balance leastconn", diff, re.M), diff
    assert re.search(rf"^\s*[+~].*server node-{re.escape(GATEWAY_2)} {re.escape(GATEWAY_2)}:30080", diff, re.M), diff

    master = edge.lab.master_pid()
    # Two bounded loads, a new connection per request: HTTP over IPv4, and TLS (passed through) over IPv6.
    http_visitor = edge.lab.visitors[0]
    https_visitor = next(v for v in edge.lab.visitors if ":" in v.address)
    loads = [
        edge.lab.start_load(http_visitor, "http", seconds=12, max_requests=60_000, concurrency=3),
        edge.lab.start_load(https_visitor, "https", seconds=12, max_requests=60_000, concurrency=2),
    ]
    try:
        time.sleep(2)  # the loads are running before the reload
        result = edge.up()
    finally:
        counts = [load_result(load, timeout=60) for load in loads]
    print(f"reload under load: http/IPv4 {counts[0]}, https/IPv6 {counts[1]}")
    assert result.summary.result == "succeeded"
    for count in counts:
        assert count["requests"] > 50, count
        assert count["failed"] == 0, count
    assert edge.lab.master_pid() == master, "a reload keeps the master; a restart would not"
    live = edge.lab.host_path(CONFIG).read_text()
    assert "balance leastconn" in live and f"{GATEWAY_2}:30080" in live
    assert_visitors_arrive(edge.lab)


def test_config_haproxy_rejects_fails_at_the_check_and_touches_nothing(edge) -> None:
    stack = edge.stack
    live_before = edge.lab.host_path(CONFIG).read_bytes()
    master = edge.lab.master_pid()
    processes = edge.lab.haproxy_pids()

    # Passes our validation (extra lines are raw), but HAProxy has no such keyword.
    stack.set_config("source-ip-edge:haproxy.extra.global[0]", auto.ConfigValue("no-such-keyword 1"), path=True)
    with pytest.raises(auto.CommandError) as failure:
        edge.up()
    edge.collect(str(failure.value))
    assert "haproxy -c rejected the new config" in str(failure.value)
    assert edge.lab.host_path(CONFIG).read_bytes() == live_before
    assert edge.lab.master_pid() == master
    assert edge.lab.haproxy_pids() == processes
    assert_visitors_arrive(edge.lab)

    stack.remove_config("source-ip-edge:haproxy.extra", path=True)
    result = edge.up()
    assert result.summary.result == "succeeded"
    assert set(_preview(edge).change_summary) == {"same"}
    assert edge.lab.host_path(CONFIG).read_bytes() == live_before


HANG_RELOAD = "/run/systemd/system/haproxy.service.d/lab-hang-reload.conf"


def _loaded_identity(edge) -> str:
    info = runtime_command(edge.lab.host_path(ADMIN_SOCKET), "show info")
    return next((line.split(": ", 1)[1] for line in info.splitlines() if line.startswith("description: ")), "")


def _file_identity(edge) -> str:
    text = edge.lab.host_path(CONFIG).read_text()
    return next(
        line.split("description ", 1)[1] for line in text.splitlines() if line.strip().startswith("description ")
    )


def _apply_shells(edge) -> list[int]:
    """The lab machine's pids of the lab host's shells running our apply command (by its text),
    only in the host's pid namespace: other apply scripts on the lab machine are not touched."""
    init = edge.lab.host_init_pid()
    assert init, "the lab host runs"
    host_pid_ns = os.readlink(f"/proc/{init}/ns/pid")
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "ns" / "pid") != host_pid_ns:
                    continue
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"# source-ip-edge apply.sh:" in cmdline:
                pids.append(int(proc.name))
    return pids


def test_apply_cut_between_swap_and_reload_is_finished_by_the_next_up(edge) -> None:
    # A file already in place must still be loaded: an apply that only compared files would say
    # "unchanged" and never reload.
    # Debian's reload is made to hang (a runtime drop-in on the lab host), the apply is killed
    # once the new file is in place, then the next `pulumi up` must load it.
    before = _loaded_identity(edge)
    hang = (
        f"mkdir -p {Path(HANG_RELOAD).parent} && printf '[Service]\\nExecReload=\\nExecReload=/bin/sleep 600\\n' "
        f"> {HANG_RELOAD} && systemctl daemon-reload"
    )
    assert edge.lab.ssh(hang).returncode == 0
    edge.stack.set_config("source-ip-edge:haproxy.balance", auto.ConfigValue("source"), path=True)
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(error=_run_catching(lambda: edge.up())))
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while "balance source" not in edge.lab.host_path(CONFIG).read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "balance source" in edge.lab.host_path(CONFIG).read_text(), "the apply reached its swap"
        while edge.lab.ssh("systemctl show -p ActiveState --value haproxy").stdout.strip() != "reloading":
            assert time.monotonic() < deadline, "the reload job started"
            time.sleep(0.1)
        shells = _apply_shells(edge)
        assert shells, "the apply's shell on the host"
        for pid in shells:
            os.kill(pid, signal.SIGKILL)  # the command dies as with a dropped SSH session
    finally:
        # The hanging reload job goes too (its client waits for it), then the update ends.
        edge.lab.ssh(
            f"rm -f {HANG_RELOAD}; systemctl daemon-reload; systemctl kill --kill-whom=control haproxy || true"
        )
        runner.join(timeout=300)
    assert not runner.is_alive()
    assert outcome.get("error") is not None, "the cut update fails"
    assert _loaded_identity(edge) == before != _file_identity(edge), "new file in place, old config running"

    result = edge.up()
    assert result.summary.result == "succeeded"
    assert _loaded_identity(edge) == _file_identity(edge)
    assert "balance source" in edge.lab.host_path(CONFIG).read_text()
    assert_visitors_arrive(edge.lab)


def test_systemd_reload_the_workers_cannot_complete_is_rolled_back(edge) -> None:
    # On the real unit: `haproxy -c` accepts a bind to an address the host lacks and
    # `systemctl reload` returns 0; the runtime API shows the old workers still running.
    good = edge.lab.host_path(CONFIG).read_text()
    running = _loaded_identity(edge)
    bind = "source-ip-edge:haproxy.frontends[0].bind"
    edge.stack.remove_config(bind, path=True)
    edge.stack.set_config(bind, auto.ConfigValue("192.0.2.99:80"), path=True)
    try:
        error = _run_catching(lambda: edge.up())
        assert error is not None and "did not load the new config" in str(error)
        assert edge.lab.host_path(CONFIG).read_text() == good
        assert _loaded_identity(edge) == running
        assert_visitors_arrive(edge.lab)
    finally:
        edge.stack.remove_config(bind, path=True)
        edge.stack.set_config(f"{bind}[0]", auto.ConfigValue(":80"), path=True)
        edge.stack.set_config(f"{bind}[1]", auto.ConfigValue("[::]:80"), path=True)
    result = edge.up()
    assert result.summary.result == "succeeded" and result.summary.resource_changes.get("update", 0) == 0
    assert _loaded_identity(edge) == running


def _run_catching(action) -> Exception | None:
    try:
        action()
    except Exception as error:  # the Automation API raises on a failed update
        return error
    return None


def test_another_stack_reads_the_outputs_through_a_stack_reference(edge) -> None:
    import pulumi

    produced = edge.stack.outputs()

    def consumer() -> None:
        ref = pulumi.StackReference(f"organization/source-ip-edge/{STACK_NAME}")
        pulumi.export("hosts", ref.get_output("haproxyHosts"))
        pulumi.export("configSha256", ref.get_output("haproxyConfigSha256"))

    with tempfile.TemporaryDirectory() as work_dir:
        stack = auto.create_or_select_stack(
            stack_name=f"{STACK_NAME}-consumer",
            project_name="source-ip-edge-consumer",
            program=consumer,
            opts=auto.LocalWorkspaceOptions(work_dir=work_dir),
        )
        try:
            result = edge.up(stack)
            assert result.outputs["hosts"].value == produced["haproxyHosts"].value
            assert result.outputs["configSha256"].value == produced["haproxyConfigSha256"].value
        finally:
            stack.destroy(color="never")
            stack.workspace.remove_stack(f"{STACK_NAME}-consumer", force=True)


def test_private_key_and_passphrase_appear_nowhere_in_plain_text(edge) -> None:
    key_lines = [
        line for line in edge.lab.private_key_file.read_text().splitlines() if line and not line.startswith("-----")
    ]
    assert key_lines
    secrets = key_lines[:]
    passphrase = os.environ.get("PULUMI_CONFIG_PASSPHRASE", "")
    if len(passphrase) >= 8:
        secrets.append(passphrase)

    texts = shared_texts(edge)
    assert "4dabf18193072939515e22adb298388d" in texts["exported state"], "the state holds the key, as a secret"
    files = backend_files(STACK_NAME)
    assert files, "the file backend holds the stack's state"
    home = os.environ.get("PULUMI_HOME")
    if home:  # the engine's own per-update log files
        files += [p for p in Path(home, "logs").rglob(f"*{STACK_NAME}*") if p.is_file()]
    for path in files:
        texts[str(path)] = _file_text(path)
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret appears in plain text in {where}"


def test_destroy_puts_the_host_back_exactly_as_it_was(edge) -> None:
    # The lab's host is fresh: no haproxy before us. Destroy removes our config, stops and
    # disables the service, and removes exactly the packages the install added.
    edge.stack.destroy(color="never", on_output=edge.collect)
    assert not edge.lab.host_path(CONFIG).exists()
    assert not edge.lab.host_path(ORIGINAL).exists()
    assert not edge.lab.host_path("/var/lib/source-ip-edge").exists()
    deadline = time.monotonic() + 10
    while edge.lab.haproxy_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert edge.lab.haproxy_pids() == set()
    assert host_snapshot(edge.lab) == edge.host_before
    # The lab host is intact otherwise: sshd still answers.
    assert edge.lab.ssh("true").returncode == 0


def test_destroy_leaves_the_api_server_as_before_apart_from_istios_kept_crds(edge) -> None:
    # Runs after the destroy above. Istio's base chart keeps its CRDs (helm.sh/resource-policy:
    # keep), and what istiod wrote itself while it ran is no chart's and no stack's object
    # (conftest.WRITTEN_BY_ISTIOD); every object the stack and its charts made is gone.
    kept, by_istiod, left = cluster_left_after_destroy(edge)
    print(
        f"after destroy: {len(kept)} kept by Helm (Istio's CRDs and their APIServices), "
        f"{len(by_istiod)} written by istiod: {sorted(by_istiod)}"
    )
    assert left == set(), f"left in the API server after destroy: {sorted(left)}"
    assert any("envoyfilters.networking.istio.io" in obj for obj in kept), sorted(kept)
    assert edge.lab.kube_json("validatingwebhookconfigurations,mutatingwebhookconfigurations")["items"] == []
