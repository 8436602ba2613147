"""The remote scripts, checked as text and run for real against a temp dir with the real haproxy.

The runs use only loopback: a master-worker haproxy bound to 127.0.0.1 on a free port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from source_ip_edge.render.haproxy_host.scripts import (
    HEREDOC_DELIMITER,
    SYSTEMD_RUNTIME_DIR,
    RemotePaths,
    apply_script,
    heredoc_delimiter,
    install_script,
    restore_script,
)

HAPROXY = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


@pytest.fixture
def haproxy_installed():
    # `make setup` installs HAProxy, so a missing one is a failure, never a skip.
    assert HAPROXY is not None, "haproxy is not installed: run `make setup`"


needs_haproxy = pytest.mark.usefixtures("haproxy_installed")
# On a host where systemd runs, the scripts would drive the machine's own haproxy.service:
# these runs only happen where they exercise the pidfile path (reported by pytest -ra if skipped).
no_systemd_here = pytest.mark.skipif(
    os.path.isdir(SYSTEMD_RUNTIME_DIR), reason="these runs exercise the pidfile/master-worker path"
)

TRICKY_COMMENT = "# $(touch /tmp/pwned) `id` ${HOME} \"double\" 'single' back\\slash\t<tab\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(port: int, balance: str = "roundrobin", extra: str = "") -> str:
    return (
        "global\n"
        "    maxconn 100\n"
        f"{extra}"
        "\n"
        "defaults\n"
        "    mode tcp\n"
        "    timeout connect 1s\n"
        "    timeout client 5s\n"
        "    timeout server 5s\n"
        "\n"
        + TRICKY_COMMENT
        + "frontend http\n"
        f"    bind 127.0.0.1:{port}\n"
        "    default_backend gateway\n"
        "\n"
        "backend gateway\n"
        f"    balance {balance}\n"
        "    server node-1 127.0.0.1:9 send-proxy-v2\n"
    )


def _run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status and status.startswith("Name:\thaproxy")


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids.update(int(k) for k in (task / "children").read_text().split())
    return kids


@pytest.fixture
def host(tmp_path: Path):
    """Temp-dir paths for one fake host; kills any haproxy the test left, by pid."""
    etc = tmp_path / "etc"
    etc.mkdir()
    paths = RemotePaths(
        config=str(etc / "haproxy.cfg"),
        staging=str(etc / "haproxy.cfg.source-ip-edge.new"),
        previous=str(etc / "haproxy.cfg.source-ip-edge.prev"),
        original=str(etc / "haproxy.cfg.source-ip-edge.orig"),
        state_dir=str(tmp_path / "state"),
        pidfile=str(tmp_path / "haproxy.pid"),
    )
    yield paths
    pidfile = Path(paths.pidfile)
    if pidfile.exists():
        pid = int(pidfile.read_text().split()[0])
        if _pid_alive(pid):
            for kid in _children(pid):
                os.kill(kid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)


def _master(paths: RemotePaths) -> int:
    return int(Path(paths.pidfile).read_text().split()[0])


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_every_script_parses(shell: str) -> None:
    for script in (install_script(), apply_script(_config(8080)), restore_script()):
        result = subprocess.run([shell, "-n"], input=script, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_scripts_stop_at_the_first_error() -> None:
    for script in (install_script(), apply_script(_config(8080)), restore_script()):
        assert script.startswith("set -eu\n")


def test_heredoc_delimiter_cannot_collide_with_config_lines() -> None:
    text = f"a\n{HEREDOC_DELIMITER}\n{HEREDOC_DELIMITER}_1\n"
    delimiter = heredoc_delimiter(text)
    assert delimiter not in text.splitlines()
    assert f"<<'{delimiter}'" in apply_script(text)


def test_config_is_readable_in_the_command_for_preview_diff() -> None:
    config = _config(8080, balance="leastconn")
    script = apply_script(config)
    assert config in script
    assert "    balance leastconn\n" in script
    assert "base64" not in script


def test_paths_with_spaces_are_quoted() -> None:
    paths = RemotePaths(config="/etc/ha proxy/haproxy.cfg")
    assert "CONFIG='/etc/ha proxy/haproxy.cfg'" in apply_script("x\n", paths)


@needs_haproxy
def test_install_does_nothing_when_haproxy_is_present() -> None:
    result = _run(install_script())
    assert result.returncode == 0, result.stderr
    assert "already installed" in result.stdout


@needs_haproxy
@no_systemd_here
def test_apply_writes_config_byte_for_byte_with_shell_metacharacters(host: RemotePaths) -> None:
    config = _config(_free_port())
    result = _run(apply_script(config, host))
    assert result.returncode == 0, result.stderr
    assert Path(host.config).read_text() == config
    assert not Path("/tmp/pwned").exists()


@needs_haproxy
@no_systemd_here
def test_apply_starts_master_worker_then_is_idempotent(host: RemotePaths) -> None:
    config = _config(_free_port())
    first = _run(apply_script(config, host))
    assert first.returncode == 0, first.stderr
    assert "started haproxy master-worker" in first.stdout
    master = _master(host)
    assert _pid_alive(master)
    mtime = os.stat(host.config).st_mtime_ns
    workers = _children(master)

    again = _run(apply_script(config, host))
    assert again.returncode == 0, again.stderr
    assert "haproxy.cfg unchanged" in again.stdout
    assert _master(host) == master
    assert _children(master) == workers
    assert os.stat(host.config).st_mtime_ns == mtime
    assert not Path(host.staging).exists()
    assert not Path(host.previous).exists()


@needs_haproxy
@no_systemd_here
def test_changed_config_reloads_seamlessly_keeping_the_master(host: RemotePaths) -> None:
    port = _free_port()
    old, new = _config(port), _config(port, balance="leastconn")
    assert _run(apply_script(old, host)).returncode == 0
    master = _master(host)
    workers = _children(master)

    result = _run(apply_script(new, host))
    assert result.returncode == 0, result.stderr
    assert "reloaded haproxy" in result.stdout
    assert _master(host) == master and _pid_alive(master)
    assert _children(master) - workers, "a new worker serves the new config"
    assert Path(host.config).read_text() == new
    assert Path(host.previous).read_text() == old
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # still listening


@needs_haproxy
@no_systemd_here
def test_rejected_config_fails_at_check_and_touches_nothing(host: RemotePaths) -> None:
    port = _free_port()
    good = _config(port)
    assert _run(apply_script(good, host)).returncode == 0
    master = _master(host)
    workers = _children(master)

    bad = _config(port, extra="    no-such-keyword 1\n")
    result = _run(apply_script(bad, host))
    assert result.returncode != 0
    assert "rejected" in result.stderr
    assert Path(host.config).read_text() == good
    assert not Path(host.staging).exists()
    assert _master(host) == master and _children(master) == workers

    assert _run(apply_script(good, host)).returncode == 0  # the next good run converges
    assert _master(host) == master


@needs_haproxy
@no_systemd_here
def test_reload_that_cannot_bind_puts_the_previous_config_back(host: RemotePaths) -> None:
    # `haproxy -c` passes (it does not bind), but the host has no 192.0.2.99.
    port = _free_port()
    good = _config(port)
    assert _run(apply_script(good, host)).returncode == 0
    master = _master(host)
    unbindable = good.replace(f"bind 127.0.0.1:{port}", "bind 192.0.2.99:18080")

    result = _run(apply_script(unbindable, host))
    assert result.returncode != 0
    assert "putting back the previous haproxy.cfg" in result.stderr
    assert Path(host.config).read_text() == good
    assert _master(host) == master and _pid_alive(master)
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the running config still serves

    again = _run(apply_script(good, host))
    assert again.returncode == 0 and "haproxy.cfg unchanged" in again.stdout


@needs_haproxy
@no_systemd_here
def test_restore_puts_back_the_original_and_stops_what_we_started(host: RemotePaths) -> None:
    original = "# the host's own config\nglobal\n    maxconn 10\n"
    Path(host.config).write_text(original)
    assert _run(apply_script(_config(_free_port()), host)).returncode == 0
    assert Path(host.original).read_text() == original
    master = _master(host)

    result = _run(restore_script(host))
    assert result.returncode == 0, result.stderr
    assert Path(host.config).read_text() == original
    deadline = time.monotonic() + 5
    while _pid_alive(master) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(master)
    for leftover in (host.original, host.previous, host.staging, host.state_dir, host.pidfile):
        assert not Path(leftover).exists(), leftover

    again = _run(restore_script(host))
    assert again.returncode == 0 and "nothing to restore" in again.stdout


@needs_haproxy
@no_systemd_here
def test_restore_removes_our_config_when_the_host_had_none(host: RemotePaths) -> None:
    assert _run(apply_script(_config(_free_port()), host)).returncode == 0
    assert _run(restore_script(host)).returncode == 0
    assert not Path(host.config).exists()


@needs_haproxy
@no_systemd_here
def test_restore_keeps_haproxy_running_when_it_ran_before_us(host: RemotePaths) -> None:
    port = _free_port()
    original = _config(port, balance="source")
    Path(host.config).write_text(original)
    started = subprocess.run(
        [HAPROXY, "-W", "-D", "-p", host.pidfile, "-f", host.config], capture_output=True, timeout=30
    )
    assert started.returncode == 0, started.stderr
    master = _master(host)

    assert _run(apply_script(_config(port), host)).returncode == 0
    assert _run(restore_script(host)).returncode == 0
    assert Path(host.config).read_text() == original
    assert _master(host) == master and _pid_alive(master)


@needs_haproxy
@no_systemd_here
def test_legacy_daemon_is_taken_over_without_usr2(host: RemotePaths) -> None:
    # USR2 would kill a haproxy that is not master-worker (e.g. Debian's sysvinit script).
    port = _free_port()
    Path(host.config).write_text(_config(port, balance="source"))
    started = subprocess.run(
        [HAPROXY, "-D", "-p", host.pidfile, "-f", host.config], capture_output=True, timeout=30
    )
    assert started.returncode == 0, started.stderr
    legacy = _master(host)

    result = _run(apply_script(_config(port), host))
    assert result.returncode == 0, result.stderr
    master = _master(host)
    assert master != legacy and _pid_alive(master)
    deadline = time.monotonic() + 5
    while _pid_alive(legacy) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(legacy)
