"""The edge's access lists on a host, run for real with the real haproxy on loopback (the harness of
test_haproxy_host_scripts): a list file checked and put in place, enforced with `src -f` on IPv4 and
IPv6, and a changed list taken by the running HAProxy through its runtime API with no reload."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from pathlib import Path

import pytest

from components.config import parse_stack_config
from components.haproxy_host.access_list import render_edge_lists
from components.haproxy_host.haproxy_cfg import config_identity
from components.haproxy_host.scripts import access_list_apply_script, access_list_remove_script

from ..conftest import valid_raw
from .test_haproxy_host_scripts import Host, _children, _free_port, _make_host

VISITORS = {"denied": "127.0.0.2", "passes": "127.0.0.3", "bystander": "127.0.0.4"}


@pytest.fixture(params=["pidfile", "systemd"])
def host(request, tmp_path: Path):
    yield from _make_host(tmp_path, request.param)


class Upstream:
    """The gateway's stand-in: says hello to every connection HAProxy forwards."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.server.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"hello")

    def close(self):
        self.stop = True
        self.thread.join(timeout=5)
        self.server.close()


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.close()


def _lists(tmp_path: Path, deny: list[str]):
    raw = valid_raw()
    raw["access"] = {"deny": deny, "denyAt": "edge"}
    (deny_list,) = render_edge_lists(parse_stack_config(raw).access)
    return deny_list


def _haproxy_cfg(host: Host, port: int, upstream_port: int, list_file: Path, balance: str = "roundrobin") -> str:
    body = (
        "# Managed by source-ip-edge (test)\n"
        "global\n"
        f"    stats socket {host.params.stats_socket} mode 600 level admin expose-fd listeners\n"
        "\n"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n"
        "\n"
        "frontend http\n"
        f"    bind 127.0.0.1:{port}\n"
        f"    bind [::1]:{port} v6only\n"
        f"    tcp-request connection reject if {{ src -f {list_file} }}\n"
        "    default_backend gateway\n"
        "\n"
        f"backend gateway\n    balance {balance}\n    server node-1 127.0.0.1:{upstream_port}\n"
    )
    return body.replace("global\n", f"global\n    description {config_identity(body)}\n", 1)


def _apply_list(host: Host, deny_list, path: Path, text: str | None = None):
    script = access_list_apply_script(
        "deny", str(path), deny_list.sha256, deny_list.entries, deny_list.summary, host.params
    )
    return host.run(script, input=deny_list.text if text is None else text)


def _greeting(port: int, source: str) -> bytes:
    """What a visitor from `source` gets: b"hello" when HAProxy forwards it, b"" when it is refused."""
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(5)
        s.bind((source, 0))
        try:
            s.connect((source if family == socket.AF_INET6 else "127.0.0.1", port))
            return s.recv(5)
        except ConnectionResetError:  # refused: HAProxy closes at once, maybe before the handshake ends
            return b""


def _running_list(host: Host, path: Path) -> list[str]:
    import subprocess

    out = subprocess.run(
        ["socat", "-t", "5", "stdio", f"UNIX-CONNECT:{host.params.stats_socket}"],
        input=f"show acl {path}\n",
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return sorted(line.split()[1] for line in out.splitlines() if len(line.split()) == 2)


def _started(host: Host, tmp_path: Path, upstream: Upstream, deny: list[str]):
    path = tmp_path / "etc" / "source-ip-edge-deny.acl"
    deny_list = _lists(tmp_path, deny)
    first = _apply_list(host, deny_list, path)
    assert first.returncode == 0, first.stderr
    assert "does not run the deny list yet" in first.stdout
    port = _free_port()
    applied = host.apply(_haproxy_cfg(host, port, upstream.port, path))
    assert applied.returncode == 0, applied.stderr
    return path, port


def test_the_list_is_enforced_at_connection_on_ipv4_and_ipv6(host: Host, tmp_path: Path, upstream: Upstream) -> None:
    path, port = _started(host, tmp_path, upstream, [f"{VISITORS['denied']}/32", "::1/128"])
    assert path.read_text().startswith("# Managed by source-ip-edge")
    assert _greeting(port, VISITORS["denied"]) == b"", "refused before anything is forwarded"
    assert _greeting(port, "::1") == b"", "IPv6 too"
    assert _greeting(port, VISITORS["passes"]) == b"hello"


def test_a_changed_list_is_taken_at_runtime_without_a_reload_and_kept_on_disk(
    host: Host, tmp_path: Path, upstream: Upstream
) -> None:
    path, port = _started(host, tmp_path, upstream, [f"{VISITORS['denied']}/32"])
    master = host.master()
    workers = _children(master)
    assert workers and _greeting(port, VISITORS["passes"]) == b"hello"

    changed = _lists(tmp_path, [f"{VISITORS['passes']}/32", "::1/128"])
    result = _apply_list(host, changed, path)
    assert result.returncode == 0, result.stderr
    assert "enforces the new deny list" in result.stdout and "no reload" in result.stdout
    assert "2 added (first: 127.0.0.3/32), 1 removed (first: 127.0.0.2/32)" in result.stdout
    assert host.master() == master and _children(master) == workers, "no reload: the same worker serves"
    assert _greeting(port, VISITORS["passes"]) == b"" and _greeting(port, "::1") == b""
    assert _greeting(port, VISITORS["denied"]) == b"hello", "the removed network passes again"
    assert path.read_text() == changed.text, "the file on disk is the new list"
    assert _running_list(host, path) == ["127.0.0.3/32", "::1/128"]

    again = _apply_list(host, changed, path)
    assert again.returncode == 0 and "unchanged and enforced by the running haproxy" in again.stdout

    # A reload (here a changed haproxy.cfg) starts from the file: the list survives it.
    reloaded = host.apply(_haproxy_cfg(host, port, upstream.port, path, balance="leastconn"))
    assert reloaded.returncode == 0, reloaded.stderr
    assert _children(master) != workers
    assert _greeting(port, VISITORS["passes"]) == b"" and _greeting(port, VISITORS["denied"]) == b"hello"


def test_a_long_list_changes_under_load_with_no_connection_lost(host: Host, tmp_path: Path, upstream: Upstream) -> None:
    # 100,000 /32s in 10.0.0.0/8 (two apart: nothing merges), plus the denied visitor.
    base = int(ipaddress.ip_address("10.0.0.0"))
    long_list = [f"{ipaddress.ip_address(base + 2 * i)}/32" for i in range(100_000)]
    path, port = _started(host, tmp_path, upstream, [*long_list, f"{VISITORS['denied']}/32"])
    master, workers = host.master(), _children(host.master())
    outcomes: list[bytes] = []
    stop = threading.Event()

    def load():  # bounded: at most 20,000 connections and 60 s
        deadline = time.monotonic() + 60
        while not stop.is_set() and len(outcomes) < 20_000 and time.monotonic() < deadline:
            try:
                outcomes.append(_greeting(port, VISITORS["bystander"]))
            except OSError as error:
                outcomes.append(repr(error).encode())

    loader = threading.Thread(target=load)
    loader.start()
    try:
        while len(outcomes) < 50:
            time.sleep(0.01)
        one_changed = _lists(tmp_path, [*long_list[1:], "127.0.0.9/32", f"{VISITORS['denied']}/32"])
        result = _apply_list(host, one_changed, path)
        during = len(outcomes)
        time.sleep(0.2)
    finally:
        stop.set()
        loader.join(timeout=70)
    assert result.returncode == 0, result.stderr
    assert "1 added (first: 127.0.0.9/32), 1 removed (first: 10.0.0.0/32)" in result.stdout
    assert during >= 50 and outcomes and set(outcomes) == {b"hello"}, {o for o in outcomes if o != b"hello"}
    assert host.master() == master and _children(master) == workers
    assert _greeting(port, "127.0.0.9") == b"" and _greeting(port, VISITORS["denied"]) == b""


def test_a_list_haproxy_refuses_or_one_cut_short_changes_nothing(
    host: Host, tmp_path: Path, upstream: Upstream
) -> None:
    path, port = _started(host, tmp_path, upstream, [f"{VISITORS['denied']}/32"])
    good = path.read_text()
    changed = _lists(tmp_path, [f"{VISITORS['passes']}/32"])
    cut = _apply_list(host, changed, path, text=changed.text[:-5])
    assert cut.returncode != 0 and "arrived incomplete" in cut.stderr
    # A file whose hash matches but that haproxy's parser refuses: the check before anything goes live.
    import hashlib

    bad_text = changed.text + "300.1.2.3/32\n"
    bad = type(changed)(
        changed.which, changed.path, bad_text, 2, hashlib.sha256(bad_text.encode()).hexdigest(), changed.summary
    )
    refused = _apply_list(host, bad, path)
    assert refused.returncode != 0 and "haproxy rejected the new deny list" in refused.stderr
    assert path.read_text() == good and _greeting(port, VISITORS["denied"]) == b""
    assert not list(path.parent.glob(".source-ip-edge-deny.acl.*")), "no staging file left"


def test_removing_the_list_deletes_only_our_file(host: Host, tmp_path: Path) -> None:
    path = tmp_path / "etc" / "source-ip-edge-deny.acl"
    deny_list = _lists(tmp_path, ["192.0.2.0/24"])
    assert _apply_list(host, deny_list, path).returncode == 0
    remove = access_list_remove_script("deny", str(path), host.params)
    assert host.run(remove).returncode == 0 and not path.exists()
    path.write_text("192.0.2.0/24\n")  # someone else's file at that path
    kept = host.run(remove)
    assert kept.returncode == 0 and "not ours" in kept.stdout and path.exists()
