"""The rendered health check against an Envoy-like status listener: a real haproxy (Debian's 2.6)
checks the lab's gateway stand-in on loopback, and its runtime API says whether each server is UP.

The stand-in answers like the Istio gateway's status listener (docs/stand-ins.md): HTTP/1.0 gets
426, HTTP/1.1 without Host 400, a PROXY header 400. No root: loopback addresses, free ports, temp dirs.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from components.haproxy_host.haproxy_cfg import ADMIN_SOCKET, render_haproxy_config
from hack.lab.haproxy_runtime import ServerState, wait_until_checked
from tests.unit.conftest import make_config
from tests.unit.gateway_standin import binary, free_port, start_standins, stop_process

NODES = ["127.0.0.1", "127.0.0.2"]  # two gateway nodes; all of 127/8 is local on Linux
CHECK_LINES = (
    "    option httpchk\n"
    "    http-check send meth GET uri /healthz/ready ver HTTP/1.1 hdr Host source-ip-edge-health-check\n"
    "    http-check expect status 200\n"
)


@pytest.fixture
def gateway_node_ports(tmp_path, request):
    """Envoy-like stand-ins on every node; returns their NodePorts."""
    standins = start_standins(tmp_path / "gateways", NODES)
    for standin in standins:
        request.addfinalizer(standin.stop)
    return standins[0].ports


def _rendered_config(node_ports) -> str:
    def mutate(raw):
        raw["gateway"].update(
            nodes=NODES, nodePorts={"http": node_ports.http, "https": node_ports.https, "status": node_ports.status}
        )
        raw["haproxy"].update(
            frontends=[
                {"name": "http", "bind": f"127.0.0.1:{free_port()}", "gatewayPort": "http"},
                {"name": "https", "bind": f"127.0.0.1:{free_port()}", "gatewayPort": "https"},
            ]
        )

    return render_haproxy_config(make_config(mutate))


def _unprivileged(text: str, workdir: Path) -> tuple[str, Path]:
    """The rendered config with only what needs root changed: no chroot and no user/group switch,
    and the admin socket in a temp dir instead of /run/haproxy. Everything else runs as rendered."""
    socket_path = workdir / "admin.sock"
    for line, replacement in (
        ("    chroot /var/lib/haproxy\n", ""),
        ("    user haproxy\n", ""),
        ("    group haproxy\n", ""),
        (f"    stats socket {ADMIN_SOCKET} ", f"    stats socket {socket_path} "),
    ):
        assert text.count(line) == 1, f"the rendered global section changed: {line!r}"
        text = text.replace(line, replacement)
    return text, socket_path


def _run_haproxy(text: str, workdir: Path, request) -> Path:
    """haproxy in the foreground on `text`; stopped by pid at teardown. Returns its admin socket."""
    text, socket_path = _unprivileged(text, workdir)
    config = workdir / "haproxy.cfg"
    config.write_text(text)
    log = (workdir / "haproxy.log").open("w")
    process = subprocess.Popen([binary("haproxy"), "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    request.addfinalizer(log.close)
    request.addfinalizer(lambda: stop_process(process))
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        assert process.poll() is None, f"haproxy exited {process.returncode}: {(workdir / 'haproxy.log').read_text()}"
        assert time.monotonic() < deadline, "haproxy did not open its admin socket in 10 s"
        time.sleep(0.05)
    return socket_path


def _servers(states: list[ServerState]) -> set[tuple[str, str]]:
    return {(state.backend, state.server) for state in states}


EVERY_SERVER = {(backend, f"node-{node}") for backend in ("gateway_http", "gateway_https") for node in NODES}


def test_rendered_check_marks_every_gateway_server_up(gateway_node_ports, tmp_path, request):
    text = _rendered_config(gateway_node_ports)
    assert CHECK_LINES in text
    socket_path = _run_haproxy(text, tmp_path, request)
    states = wait_until_checked(socket_path, timeout=15)
    assert _servers(states) == EVERY_SERVER
    assert all((s.status, s.check_status, s.check_code) == ("UP", "L7OK", "200") for s in states), states


def _old_http10_check(text: str) -> str:
    """The naive check: HTTP/1.0 without Host, which Envoy's status listener answers with 426."""
    assert text.count(CHECK_LINES) == 2
    return text.replace(CHECK_LINES, "    option httpchk GET /healthz/ready\n")


def _check_with_proxy_header(text: str) -> str:
    """The rendered request, but with a PROXY header on the check: the status listener takes none."""
    assert text.count(" send-proxy-v2\n") == 2
    return text.replace(" send-proxy-v2\n", " send-proxy-v2 check-send-proxy\n")


@pytest.mark.parametrize(
    ("edit", "refused_with"),
    [(_old_http10_check, "426"), (_check_with_proxy_header, "400")],
    ids=["http10-check", "check-send-proxy"],
)
def test_a_check_the_status_listener_refuses_marks_every_server_down(
    edit, refused_with, gateway_node_ports, tmp_path, request
):
    socket_path = _run_haproxy(edit(_rendered_config(gateway_node_ports)), tmp_path, request)
    states = wait_until_checked(socket_path, timeout=15)
    assert _servers(states) == EVERY_SERVER
    assert all((s.status, s.check_status, s.check_code) == ("DOWN", "L7STS", refused_with) for s in states), states
