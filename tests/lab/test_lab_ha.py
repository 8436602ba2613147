"""The lab layer, HA pair: two real Debian hosts (systemd as PID 1) share a VIP through keepalived,
converged by `pulumi up` (Automation API). Runs after test_lab_edge.py, whose last test destroys
the stack: the first test here converges it again.

Failover numbers (requests failed during the switch, time until new connections succeed) are
printed, not asserted; the tests assert that the VIP moved and that traffic resumed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from pulumi import automation as auto

from hack.lab.labkit import REPO, LabHost, in_namespace, load_result
from tests.lab.conftest import (
    STACK_NAME,
    cluster_left_after_destroy,
    host_machine,
    host_snapshot,
    pair_host_snapshot,
    shared_texts,
    wait_until,
)


def _exactly_one_holder(lab, timeout: float = 20):
    """The VIP's holders once there is exactly one, or as they are when `timeout` runs out."""
    holders: list[LabHost] = []

    def one() -> bool:
        holders[:] = lab.vip_holders()
        return len(holders) == 1

    wait_until(one, timeout, interval=0.2)
    return holders


def _counter(metrics: str, family: str, proxy: str) -> float:
    """One sample of a metric family for one proxy (frontend) from the Prometheus text."""
    for line in metrics.splitlines():
        if line.startswith(family + "{") and f'proxy="{proxy}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {family} for proxy {proxy}")


def test_up_makes_an_ha_pair_with_exactly_one_vip_holder(edge) -> None:
    result = edge.up()
    assert result.summary.result == "succeeded"
    lab = edge.lab
    assert len(lab.hosts) == 2
    for host in lab.hosts:
        assert lab.ssh("cat /proc/1/comm", address=host.address).stdout.strip() == "systemd"
        assert lab.units_active(host, "haproxy", "keepalived") == ["active", "active"], host
    # Both start as BACKUP with nopreempt: whichever keepalived started first may hold it.
    holders = _exactly_one_holder(lab)
    assert len(holders) == 1, holders
    outputs = result.outputs
    assert outputs["vip"].value["address"] == lab.vip
    for visitor in lab.visitors:
        assert lab.seen_by_gateway(visitor, "http") == visitor.address


def test_a_converged_pair_runs_nothing_on_either_host(edge) -> None:
    logins = edge.sshd_logins()
    result = edge.up(expect_no_changes=True)
    assert set(result.summary.resource_changes or {}) == {"same"}
    assert edge.sshd_logins() == logins


def test_metrics_answer_with_haproxy_families_and_count_the_labs_traffic(edge) -> None:
    lab = edge.lab
    holder = _exactly_one_holder(lab)[0]
    before = lab.metrics(holder)
    for family in ("haproxy_process_", "haproxy_frontend_connections_total", "haproxy_backend_", "haproxy_server_"):
        assert family in before, family
    connections = _counter(before, "haproxy_frontend_connections_total", "http")
    visitor = next(v for v in lab.visitors if v.target == lab.vip)
    for _ in range(5):
        assert lab.seen_by_gateway(visitor, "http") == visitor.address
    after = lab.metrics(holder)
    assert _counter(after, "haproxy_frontend_connections_total", "http") >= connections + 5
    stats = lab.metrics(holder, path="/stats;csv")
    assert stats.startswith("# pxname,svname") and "gateway_http" in stats
    # Loopback only: the metrics listener does not answer on the host's own address.
    result = in_namespace(
        visitor.namespace, ["curl", "-s", "--max-time", "2", f"http://{lab.vip}:8404/metrics"], timeout=10
    )
    assert result.returncode != 0


def _failover(edge, stop: Callable[[LabHost], None], restore: Callable[[LabHost], None]) -> dict:
    """Bounded load through the VIP; `stop` the holder (its HAProxy, or the whole host), `restore`
    it once the load is over; returns the numbers."""
    lab = edge.lab
    holder = _exactly_one_holder(lab)[0]
    visitor = next(v for v in lab.visitors if v.target == lab.vip)
    load = lab.start_load(visitor, "http", seconds=20, max_requests=100_000, concurrency=3)
    try:
        time.sleep(3)
        acted = time.monotonic()
        stop(holder)
        stopped = time.monotonic() - acted
        moved = None
        while time.monotonic() - acted < 15:
            holders = lab.vip_holders()
            if holders and holder not in holders:
                moved = time.monotonic() - acted
                break
            time.sleep(0.05)
        # Time until a new connection through the VIP succeeds again.
        recovered = None
        while time.monotonic() - acted < 20:
            if lab.seen_by_gateway(visitor, "http") == visitor.address:
                recovered = time.monotonic() - acted
                break
            time.sleep(0.1)
    finally:
        counts = load_result(load, timeout=60)
        restore(holder)
    new_holders = lab.vip_holders()
    return {
        "from": holder.name,
        "to": [h.name for h in new_holders],
        "stop_took_s": round(stopped, 2),
        "vip_moved_s": moved,
        "new_connections_ok_after_s": recovered,
        "load": counts,
    }


def _on_host(lab, command: str) -> Callable[[LabHost], None]:
    """`command` over SSH on the host it is given; it must succeed."""

    def run(host: LabHost) -> None:
        result = lab.ssh(command, address=host.address)
        assert result.returncode == 0, (host.name, command, result.stderr)

    return run


def test_stopping_haproxy_on_the_holder_moves_the_vip_and_traffic_resumes(edge) -> None:
    numbers = _failover(
        edge, _on_host(edge.lab, "systemctl stop haproxy"), _on_host(edge.lab, "systemctl start haproxy")
    )
    print(f"failover (haproxy stopped on the VIP holder): {numbers}")
    assert numbers["vip_moved_s"] is not None, numbers
    assert numbers["new_connections_ok_after_s"] is not None, numbers
    assert numbers["to"] and numbers["from"] not in numbers["to"], numbers
    assert numbers["load"]["ok"] > 0, numbers
    # nopreempt: the host whose haproxy is back does not take the VIP back.
    time.sleep(4)
    assert [h.name for h in _exactly_one_holder(edge.lab)] == numbers["to"]
    for host in edge.lab.hosts:
        assert edge.lab.units_active(host, "haproxy", "keepalived") == ["active", "active"]


@pytest.mark.parametrize("how", ["cut", "halt"], ids=["power-cut", "clean-poweroff"])
def test_the_whole_holder_going_down_moves_the_vip_and_traffic_resumes(edge, how: str) -> None:
    # cut: the host loses its power (every process killed, no shutdown: the others notice that its
    # VRRP adverts stopped); halt: systemd shuts it down (keepalived gives the VIP up on its way).
    # The host boots again afterwards, so the lab is whole for the tests after this one.
    numbers = _failover(edge, lambda host: host_machine(how, host), lambda host: host_machine("boot", host))
    print(f"failover (the VIP holder's whole host down: {how}): {numbers}")
    assert numbers["vip_moved_s"] is not None, numbers
    assert numbers["new_connections_ok_after_s"] is not None, numbers
    assert numbers["to"] and numbers["from"] not in numbers["to"], numbers
    assert numbers["load"]["ok"] > 0, numbers
    lab = edge.lab
    for host in lab.hosts:
        assert lab.ssh("cat /proc/1/comm", address=host.address).stdout.strip() == "systemd", host.name
        assert lab.units_active(host, "haproxy", "keepalived") == ["active", "active"], host.name
    # nopreempt: the host that booted again does not take the VIP back.
    time.sleep(4)
    assert [h.name for h in _exactly_one_holder(lab)] == numbers["to"]
    visitor = next(v for v in lab.visitors if v.target == lab.vip)
    assert lab.seen_by_gateway(visitor, "http") == visitor.address


def test_unicast_vrrp_keeps_one_holder_where_the_segment_drops_multicast(edge) -> None:
    """haproxy.vip.unicast. With the edge bridge dropping multicast (as many networks do), multicast
    VRRP splits the pair: neither host hears the other's adverts, and both take the VIP. Unicast
    VRRP, applied by `pulumi up`, makes it one holder again, and fails over on that segment."""
    lab, stack = edge.lab, edge.stack
    assert len(_exactly_one_holder(lab)) == 1
    lab.flood_multicast_to_hosts(False)
    try:
        assert wait_until(lambda: len(lab.vip_holders()) == 2, 15, interval=0.2), (
            "multicast VRRP without multicast: each host should take the VIP"
        )
        stack.set_config("source-ip-edge:haproxy.vip.unicast", auto.ConfigValue("true"), path=True)
        assert edge.up().summary.result == "succeeded"
        for host in lab.hosts:
            conf = lab.ssh("cat /etc/keepalived/keepalived.conf", address=host.address).stdout
            peers = "".join(f"        {h.address}\n" for h in lab.hosts if h is not host)
            assert f"    unicast_src_ip {host.address}\n    unicast_peer {{\n{peers}    }}\n" in conf, conf
        assert len(_exactly_one_holder(lab, timeout=20)) == 1
        numbers = _failover(edge, _on_host(lab, "systemctl stop haproxy"), _on_host(lab, "systemctl start haproxy"))
        print(f"failover with unicast VRRP on a segment without multicast: {numbers}")
        assert numbers["vip_moved_s"] is not None and numbers["new_connections_ok_after_s"] is not None, numbers
        assert numbers["to"] and numbers["from"] not in numbers["to"], numbers
        time.sleep(4)
        assert [h.name for h in _exactly_one_holder(lab)] == numbers["to"]
    finally:
        lab.flood_multicast_to_hosts(True)
        stack.remove_config("source-ip-edge:haproxy.vip.unicast", path=True)
    assert edge.up().summary.result == "succeeded"  # back to multicast VRRP
    assert len(_exactly_one_holder(lab)) == 1
    assert all(
        "unicast" not in lab.ssh("cat /etc/keepalived/keepalived.conf", address=h.address).stdout for h in lab.hosts
    )


def test_vrrp_password_appears_nowhere_in_plain_text(edge) -> None:
    password = edge.lab.vrrp_password_file.read_text().strip()
    assert len(password) == 8
    texts = shared_texts(edge)
    # The keepalived commands' stdin is a secret: encrypted in the state, their text readable.
    assert re.search(r'"stdin":\s*\{\s*"4dabf18193072939515e22adb298388d"', texts["exported state"])
    assert "keepalived_apply.sh" in texts["exported state"]
    for where, text in texts.items():
        assert password not in text, f"the VRRP password appears in plain text in {where}"


def test_destroy_returns_both_hosts_to_what_they_were(edge) -> None:
    edge.stack.destroy(color="never", on_output=edge.collect)
    for host in edge.lab.hosts:
        assert pair_host_snapshot(edge.lab, host) == edge.hosts_before[host.name], host.name
    assert edge.lab.vip_holders() == []
    assert host_snapshot(edge.lab) == edge.host_before
    # A second install over the CRDs the first kept, then a second destroy: the same clean state.
    assert cluster_left_after_destroy(edge)[2] == set()


def _without_directory_entries(snapshot: str) -> str:
    """A host snapshot without `ls -la`'s lines for the directories themselves ('.', '..'), whose
    times change whenever a file comes and goes in them."""
    return "\n".join(line for line in snapshot.splitlines() if not re.search(r" \.\.?$", line))


def test_removing_the_vip_puts_both_hosts_back_as_before_keepalived(edge) -> None:
    """After the destroy above: up without the VIP (the hosts as they are before keepalived), up with
    it, then without it again: each host is as it was before keepalived, and HAProxy serves on."""
    lab, stack = edge.lab, edge.stack
    stack_file = REPO / f"Pulumi.{STACK_NAME}.yaml"
    with_vip = stack_file.read_text()
    ipv6_visitor = next(v for v in lab.visitors if v.target != lab.vip)  # to a host's own address
    try:
        stack.remove_config("source-ip-edge:haproxy.vip", path=True)
        stack.remove_config("source-ip-edge:vrrpPassword")
        assert edge.up(stack).summary.result == "succeeded"
        before_keepalived = {h.name: _without_directory_entries(pair_host_snapshot(lab, h)) for h in lab.hosts}
        for host in lab.hosts:
            assert "installed keepalived " not in before_keepalived[host.name], before_keepalived[host.name]
            assert lab.units_active(host, "haproxy") == ["active"]

        stack_file.write_text(with_vip)
        assert edge.up(stack).summary.result == "succeeded"
        for host in lab.hosts:
            assert lab.units_active(host, "haproxy", "keepalived") == ["active", "active"], host.name
        assert len(_exactly_one_holder(lab)) == 1

        # The VRRP password left without its VIP is refused, naming the key, before anything runs.
        stack.remove_config("source-ip-edge:haproxy.vip", path=True)
        with pytest.raises(auto.CommandError) as refused:
            edge.up(stack)
        edge.collect(str(refused.value))
        assert "source-ip-edge:vrrpPassword: is set but haproxy.vip is not" in str(refused.value)
        for host in lab.hosts:
            assert lab.units_active(host, "keepalived") == ["active"], host.name
        assert len(lab.vip_holders()) == 1

        stack.remove_config("source-ip-edge:vrrpPassword")
        result = edge.up(stack)
        assert result.summary.result == "succeeded"
        # Only the keepalived command of each host goes; its delete restores keepalived.
        assert (result.summary.resource_changes or {}).get("delete") == len(lab.hosts), result.summary.resource_changes
        for host in lab.hosts:
            after = _without_directory_entries(pair_host_snapshot(lab, host))
            assert after == before_keepalived[host.name], host.name
        assert lab.vip_holders() == []
        assert lab.seen_by_gateway(ipv6_visitor, "http") == ipv6_visitor.address
    finally:
        stack_file.write_text(with_vip)
