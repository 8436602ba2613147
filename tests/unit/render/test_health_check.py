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

from components.haproxy_host.haproxy_cfg import ADMIN_SOCKET, CHECK_FALL, CHECK_RISE, render_haproxy_config
from hack.lab.haproxy_runtime import ServerState, wait_until_checked
from tests.unit.conftest import make_config
from tests.unit.gateway_standin import binary, free_node_ports, free_port, start_standins, stop_process

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


class _DrainingStatusPort:
    """A status port that answers like a gateway pod's readiness: 200, then 503 once draining. Counts
    the checks it answered since the last switch; HTTP/1.1 with a Host only, like Envoy's listener."""

    def __init__(self, port: int) -> None:
        import http.server
        import threading

        owner = self
        self.code = 200
        self.answered = 0
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 the stdlib's name
                ok = self.request_version == "HTTP/1.1" and self.headers.get("Host") and self.path == "/healthz/ready"
                with owner.lock:
                    code = owner.code if ok else 400
                    owner.answered += 1
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((NODES[0], port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def switch(self, code: int) -> None:
        with self.lock:
            self.code, self.answered = code, 0

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _statuses_of(socket_path, server: str) -> set[str]:
    """The server's status in each backend (http and https check it apart)."""
    from hack.lab.haproxy_runtime import server_states

    states = [s.status for s in server_states(socket_path) if s.server == server]
    assert len(states) == 2, states
    return set(states)


def _poll(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_draining_node_is_down_after_fall_checks_and_up_again_after_rise(tmp_path, request):
    # The gateway's readiness goes 503 when its drain starts; HAProxy takes the node out after
    # `fall` such answers (not one: a surge roll's old pod may answer one) and back after `rise` 200s.
    node_ports = free_node_ports([NODES[0]])
    status = _DrainingStatusPort(node_ports.status)
    request.addfinalizer(status.stop)
    text = _rendered_config(node_ports)
    # One node: the other server's checks go to a port nobody listens on, and stay DOWN.
    socket_path = _run_haproxy(text, tmp_path, request)
    server = f"node-{NODES[0]}"
    assert _poll(lambda: _statuses_of(socket_path, server) == {"UP"}, 15)
    status.switch(503)
    assert _poll(lambda: _statuses_of(socket_path, server) == {"DOWN"}, 15), "a draining node stayed UP"
    with status.lock:
        # Each backend checks its own servers: http and https both reach this one status port.
        answered = status.answered
    assert 2 * CHECK_FALL <= answered <= 2 * CHECK_FALL + 1, answered
    status.switch(200)
    assert _poll(lambda: _statuses_of(socket_path, server) == {"UP"}, 15), "a ready node stayed DOWN"
    with status.lock:
        answered = status.answered
    assert 2 * CHECK_RISE <= answered <= 2 * CHECK_RISE + 1, answered
