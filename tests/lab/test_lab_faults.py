"""Faults through `pulumi up` on the lab: each ends with every visitor served and the next
`pulumi up` converging with nothing lost. The cut apply and the reload the workers
cannot complete are in test_lab_edge.py; failover of the HA pair in test_lab_ha.py.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import threading
import time

import pytest
from pulumi import automation as auto

from components.haproxy_host.haproxy_cfg import drain_detection_bound_s
from hack.lab.labkit import load_result
from tests.lab.conftest import assert_visitors_arrive, wait_until

CONFIG = "/etc/haproxy/haproxy.cfg"
# A node that refuses connections fails its checks at once: DOWN within inter + (fall - 1) x fastinter.
FALL_TIMES_INTER_S = math.ceil(drain_detection_bound_s())


def _configs(edge) -> list[str]:
    return [edge.lab.ssh(f"cat {CONFIG}", address=host.address).stdout for host in edge.lab.hosts]


def _running_identity(lab, host) -> str:
    """The config identity the host's running haproxy reports through its runtime API."""
    return lab.ssh(
        "echo 'show info' | socat stdio UNIX-CONNECT:/run/haproxy/admin.sock | grep ^description", address=host.address
    ).stdout


def test_the_edge_is_up_for_the_fault_tests(edge) -> None:
    # Both gateway nodes, whatever ran before: one of them goes down below.
    for i, gateway in enumerate(edge.lab.gateways):
        edge.stack.set_config(f"source-ip-edge:gateway.nodes[{i}]", auto.ConfigValue(gateway["address"]), path=True)
    assert edge.up().summary.result == "succeeded"
    assert_visitors_arrive(edge.lab, ("http",))


def _restarted(lab, host, old_pid: str) -> bool:
    pid = lab.ssh("cat /run/haproxy.pid", address=host.address).stdout.strip()
    return bool(pid) and pid != old_pid and lab.units_active(host, "haproxy") == ["active"]


def test_haproxy_killed_on_a_host_is_back_and_the_next_up_changes_nothing(edge) -> None:
    lab = edge.lab
    for host in lab.hosts:
        old = lab.ssh("cat /run/haproxy.pid", address=host.address).stdout.strip()
        assert lab.ssh("kill -KILL $(cat /run/haproxy.pid)", address=host.address).returncode == 0
        # Debian's unit: Restart=always.
        assert wait_until(lambda host=host, old=old: _restarted(lab, host, old), 30, interval=0.2), host
        assert lab.units_active(host, "haproxy") == ["active"], host
    assert_visitors_arrive(edge.lab, ("http",))
    before = _configs(edge)
    result = edge.up()
    assert set(result.summary.resource_changes or {}) == {"same"}
    assert _configs(edge) == before


def test_a_changed_host_key_is_refused_before_any_command_runs(edge, tmp_path) -> None:
    key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    other = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    path = "source-ip-edge:haproxy.hosts[0].hostKey"
    pinned = edge.stack.get_config(path, path=True).value
    before, logins = _configs(edge), edge.sshd_logins()
    edge.stack.set_config(path, auto.ConfigValue(other), path=True)
    edge.stack.set_config("source-ip-edge:haproxy.balance", auto.ConfigValue("first"), path=True)
    try:
        with pytest.raises(auto.CommandError) as failure:
            edge.up()
        assert "host key" in str(failure.value).lower(), str(failure.value)[-2000:]
        # Logins first: reading the config back below is a login of its own.
        assert edge.sshd_logins() == logins, "no session was opened on the host whose key changed"
        assert _configs(edge)[0] == before[0], "the host is untouched"
    finally:
        edge.stack.set_config(path, auto.ConfigValue(pinned), path=True)
        edge.stack.remove_config("source-ip-edge:haproxy.balance", path=True)
    assert edge.up().summary.result == "succeeded"
    assert_visitors_arrive(edge.lab, ("http",))


def test_two_ups_of_one_stack_at_once_never_half_apply_a_host(edge) -> None:
    edge.stack.set_config("source-ip-edge:haproxy.balance", auto.ConfigValue("leastconn"), path=True)
    outcomes: list[object] = []

    def one_up() -> None:
        try:
            outcomes.append(edge.up().summary.result)
        except auto.CommandError as error:
            outcomes.append(error)

    runs = [threading.Thread(target=one_up) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=600)
    print(f"two ups at once: {[o if isinstance(o, str) else 'failed: ' + str(o).strip()[-200:] for o in outcomes]}")
    assert "succeeded" in outcomes, outcomes
    for failure in (o for o in outcomes if not isinstance(o, str)):
        assert "lock" in str(failure).lower(), str(failure)[-2000:]  # the backend's stack lock
    for config in _configs(edge):
        assert "balance leastconn" in config
    assert set(edge.up().summary.resource_changes or {}) == {"same"}
    edge.stack.remove_config("source-ip-edge:haproxy.balance", path=True)
    assert edge.up().summary.result == "succeeded"


def test_a_gateway_node_down_under_load_is_taken_out_by_the_check(edge) -> None:
    lab = edge.lab
    gateway = lab.gateways[0]
    conf = lab.run_dir / gateway["name"] / "nginx.conf"
    visitor = lab.visitors[0]
    window = lab.start_load(visitor, "http", seconds=FALL_TIMES_INTER_S + 4, max_requests=100_000, concurrency=3)
    try:
        time.sleep(1)
        # The node stops answering: nginx's master and worker, by pid, from the gateway's namespace.
        for pid in lab.namespace_pids(gateway["namespace"]):
            os.kill(pid, signal.SIGKILL)
        during = load_result(window, timeout=60)
        # After fall x inter (plus one check interval) HAProxy sends nowhere else but the live node.
        after = load_result(lab.start_load(visitor, "http", seconds=8, max_requests=100_000, concurrency=3), timeout=60)
    finally:
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                gateway["namespace"],
                "nginx",
                "-q",
                "-c",
                str(conf),
                "-p",
                str(conf.parent),
                "-e",
                str(conf.parent / "error.log"),
            ],
            check=True,
        )
    print(f"gateway node down under load: while the check notices {during}, after {after}")
    assert after["requests"] > 50 and after["failed"] == 0, after
    wait_until(lambda: _visitors_arrive(edge), 30, interval=1)
    assert_visitors_arrive(edge.lab, ("http",))
    assert set(edge.up().summary.resource_changes or {}) == {"same"}


def _gateway_down_on_every_host(edge, address: str) -> bool:
    stat = "echo 'show stat' | socat stdio UNIX-CONNECT:/run/haproxy/admin.sock"
    return all(
        all(
            line.split(",")[17] == "DOWN"
            for line in edge.lab.ssh(stat, address=host.address).stdout.splitlines()
            if line.split(",")[1:2] == [f"node-{address}"]
        )
        for host in edge.lab.hosts
    )


def test_an_unreachable_gateway_node_stays_out_across_a_pulumi_up_under_load(edge) -> None:
    """A gateway node that drops traffic (powered off; or, with externalTrafficPolicy Local, a node
    running no gateway pod), which HAProxy's check has marked DOWN, and then a `pulumi up` that
    reloads HAProxy: the new workers start from the old workers' server states (server-state-file,
    lib.sh save_server_state), so no visitor is sent to the node. Before, new workers started every
    server UP until its first check timed out, and each reload lost the connections sent there."""
    lab = edge.lab
    gateway = lab.gateways[0]
    visitor = lab.visitors[0]
    # The node takes the SYNs and never answers: its replies to the HAProxy hosts are discarded
    # (blackhole routes in its namespace), as a node that is off or whose kube-proxy drops them.
    blackholes = [
        ["ip", "-n", gateway["namespace"], "route", "add", "blackhole", f"{host.address}/32"] for host in lab.hosts
    ]
    for route in blackholes:
        subprocess.run(route, check=True)
    try:
        assert wait_until(lambda: _gateway_down_on_every_host(edge, gateway["address"]), FALL_TIMES_INTER_S + 20)
        edge.stack.set_config("source-ip-edge:haproxy.timeouts.client", auto.ConfigValue("51s"), path=True)
        load = lab.start_load(visitor, "http", seconds=45, max_requests=500_000, concurrency=3)
        started = time.monotonic()
        try:
            time.sleep(2)
            assert edge.up().summary.result == "succeeded"
            up_done = time.monotonic() - started
        finally:
            counts = load_result(load, timeout=120)
    finally:
        for route in blackholes:
            subprocess.run([*route[:4], "del", *route[5:]], check=True)
        edge.stack.remove_config("source-ip-edge:haproxy.timeouts.client", path=True)
    print(f"an unreachable gateway node across a pulumi up (done {up_done:.1f} s into the load): {counts}")
    assert up_done < counts["seconds"] - 3, "the reloads happened while the load ran"
    assert all("timeout client 51s" in config for config in _configs(edge))
    assert counts["requests"] > 50 and counts["failed"] == 0, counts
    wait_until(lambda: _visitors_arrive(edge), 30, interval=1)
    assert_visitors_arrive(edge.lab, ("http",))
    assert edge.up().summary.result == "succeeded"


def _visitors_arrive(edge) -> bool:
    """assert_visitors_arrive as a predicate, for wait_until."""
    try:
        assert_visitors_arrive(edge.lab, ("http",))
        return True
    except AssertionError:
        return False


def test_a_full_disk_during_an_apply_leaves_the_live_config_running(edge) -> None:
    lab, host = edge.lab, edge.lab.hosts[0]
    before = _configs(edge)
    running = _running_identity(lab, host)
    # /etc/haproxy on a full 1 MiB tmpfs holding the same files: the staging copy cannot be written.
    fill = (
        "cp -a /etc/haproxy /run/lab-haproxy-etc && mount -t tmpfs -o size=1m tmpfs /etc/haproxy"
        " && cp -a /run/lab-haproxy-etc/. /etc/haproxy/ && { dd if=/dev/zero of=/etc/haproxy/.fill "
        "bs=4k 2>/dev/null || true; }"
    )
    assert lab.ssh(fill, address=host.address).returncode == 0
    edge.stack.set_config("source-ip-edge:haproxy.balance", auto.ConfigValue("first"), path=True)
    try:
        with pytest.raises(auto.CommandError) as failure:
            edge.up()
        assert "No space left" in str(failure.value), str(failure.value)[-2000:]
        assert _configs(edge)[0] == before[0], "the live config is untouched"
        assert _running_identity(lab, host) == running, "and still the one running"
        assert_visitors_arrive(edge.lab, ("http",))
    finally:
        lab.ssh("umount /etc/haproxy; rm -rf /run/lab-haproxy-etc", address=host.address)
    result = edge.up()  # the next up converges once there is room
    assert result.summary.result == "succeeded"
    assert all("balance first" in config for config in _configs(edge))
    edge.stack.remove_config("source-ip-edge:haproxy.balance", path=True)
    assert edge.up().summary.result == "succeeded"
