"""The host scripts (render/haproxy_host/*.sh), checked as commands and run for real with the real
haproxy on loopback, on every machine: the service manager is a parameter, so the pidfile path
runs as itself and the systemd path runs against a systemctl stand-in as strict as Debian's unit
(stand_ins/systemctl). The lab runs the same scripts on a host where systemd is PID 1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from components.haproxy_host.haproxy_cfg import config_identity
from components.haproxy_host.scripts import (
    HEREDOC_DELIMITER,
    HostParams,
    apply_script,
    heredoc_delimiter,
    install_script,
    restore_script,
    uninstall_script,
)

HAPROXY = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
STAND_INS = Path(__file__).with_name("stand_ins")
TRICKY_COMMENT = "# $(touch /tmp/pwned) `id` ${HOME} \"double\" 'single' back\\slash\t<tab\n"
ALL_SCRIPTS = (install_script, uninstall_script, restore_script, lambda: apply_script("x\n"))


@pytest.fixture(autouse=True)
def tools_installed():
    # `make setup` installs them, so a missing one is a failure, never a skip.
    for tool in ("haproxy", "socat", "flock"):
        assert shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"), f"{tool}: run `make setup`"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(host: HostParams, port: int, balance: str = "roundrobin", extra: str = "", bind: str = "") -> str:
    """A config shaped like the rendered one: our marker, the identity line, the stats socket."""
    body = (
        "# Managed by source-ip-edge (test)\n"
        "global\n"
        "    maxconn 100\n"
        f"    stats socket {host.stats_socket} mode 600 level admin expose-fd listeners\n"
        f"{extra}"
        "\n"
        "defaults\n"
        "    mode tcp\n"
        "    timeout connect 1s\n"
        "    timeout client 5s\n"
        "    timeout server 5s\n"
        "\n" + TRICKY_COMMENT + "frontend http\n"
        f"    bind {bind or f'127.0.0.1:{port}'}\n"
        "    default_backend gateway\n"
        "\n"
        "backend gateway\n"
        f"    balance {balance}\n"
        "    server node-1 127.0.0.1:9 send-proxy-v2\n"
    )
    return body.replace("global\n", f"global\n    description {config_identity(body)}\n", 1)


def _identity(config: str) -> str:
    return next(line.split("description ", 1)[1] for line in config.splitlines() if "description " in line)


class Host:
    """One fake host in a temp dir: its paths, and the environment its scripts run in."""

    def __init__(self, tmp: Path, manager: str):
        etc = tmp / "etc"
        etc.mkdir()
        self.params = HostParams(
            config=str(etc / "haproxy.cfg"),
            state_dir=str(tmp / "state"),
            pidfile=str(tmp / "haproxy.pid"),
            stats_socket=str(tmp / "run" / "admin.sock"),
            server_state_file=str(tmp / "run" / "server-state"),
            service_manager=manager,
            conf_d=str(etc / "conf.d"),
        )
        self.systemd = tmp / "systemd"
        self.dpkg = tmp / "dpkg"
        self.dpkg.mkdir()
        (self.dpkg / "installed").write_text("haproxy\nsocat\n")  # as on the lab machine (make setup)
        self.env = dict(
            os.environ,
            PATH=f"{STAND_INS}:{os.environ['PATH']}" if manager == "systemd" else os.environ["PATH"],
            HAPROXY_CFG=self.params.config,
            PIDFILE=self.params.pidfile,
            FAKE_SYSTEMD_DIR=str(self.systemd),
            FAKE_DPKG_DIR=str(self.dpkg),
        )

    def run(self, script: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120, env=self.env, **kw)

    def popen(self, script: str) -> subprocess.Popen:
        return subprocess.Popen(
            ["sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            start_new_session=True,
        )

    def apply(self, config: str) -> subprocess.CompletedProcess:
        return self.run(apply_script(config, self.params))

    def restore(self) -> subprocess.CompletedProcess:
        return self.run(restore_script(self.params))

    def master(self) -> int:
        return int(Path(self.params.pidfile).read_text().split()[0])

    def loaded(self) -> str:
        result = subprocess.run(
            ["socat", "-t", "2", "stdio", f"UNIX-CONNECT:{self.params.stats_socket}"],
            input="show info\n",
            capture_output=True,
            text=True,
            timeout=10,
        )
        return next(
            (line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("description: ")), ""
        )

    def record(self) -> dict[str, str]:
        text = (Path(self.params.state_dir) / "before").read_text()
        return dict(line.split("=", 1) for line in text.splitlines())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        status = Path(f"/proc/{pid}/status").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return "\nState:\tZ" not in status and status.startswith("Name:\thaproxy")


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids.update(int(k) for k in (task / "children").read_text().split())
    return kids


def _wait_dead(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def _make_host(tmp_path: Path, manager: str):
    host = Host(tmp_path, manager)
    yield host
    pidfile = Path(host.params.pidfile)
    if pidfile.exists():  # kill what the test left, by pid
        pid = int(pidfile.read_text().split()[0])
        if _alive(pid):
            for kid in _children(pid):
                with contextlib.suppress(ProcessLookupError):  # an old worker may finish meanwhile
                    os.kill(kid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(params=["pidfile", "systemd"])
def host(request, tmp_path: Path):
    """Every behaviour on both service managers."""
    yield from _make_host(tmp_path, request.param)


@pytest.fixture
def systemd_host(tmp_path: Path):
    yield from _make_host(tmp_path, "systemd")


# --- the commands as text ---------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_every_command_parses(shell: str) -> None:
    for make in ALL_SCRIPTS:
        result = subprocess.run([shell, "-n"], input=make(), capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_commands_stop_at_the_first_error_and_name_their_script() -> None:
    for make, name in zip(ALL_SCRIPTS, ("install.sh", "uninstall.sh", "restore.sh", "apply.sh"), strict=False):
        script = make()
        assert script.startswith("set -eu\n") and f"source-ip-edge {name}" in script


def test_scripts_are_sent_unchanged_after_their_parameters() -> None:
    # Parameterised by variables, not by text replacement: each file is in the command verbatim.
    here = Path(__file__).parents[3] / "components" / "haproxy_host"
    command = apply_script("x\n")
    assert (here / "lib.sh").read_text() in command and (here / "apply.sh").read_text() in command
    assert "HAPROXY_CFG=/etc/haproxy/haproxy.cfg\n" in command


def test_heredoc_delimiter_cannot_collide_with_config_lines() -> None:
    text = f"a\n{HEREDOC_DELIMITER}\n{HEREDOC_DELIMITER}_1\n"
    delimiter = heredoc_delimiter(text)
    assert delimiter not in text.splitlines()
    assert f"<<'{delimiter}'" in apply_script(text)


def test_config_is_readable_in_the_command_for_preview_diff() -> None:
    config = "global\n    maxconn 7\n\nbackend b\n    balance leastconn\n"
    script = apply_script(config)
    assert config in script and "base64" not in script


def test_paths_with_spaces_are_quoted() -> None:
    assert "HAPROXY_CFG='/etc/ha proxy/haproxy.cfg'" in apply_script(
        "x\n", HostParams(config="/etc/ha proxy/haproxy.cfg")
    )


# --- apply ----------------------------------------------------------------------------------------


def test_apply_writes_config_byte_for_byte_with_shell_metacharacters(host: Host) -> None:
    config = _config(host.params, _free_port())
    result = host.apply(config)
    assert result.returncode == 0, result.stderr
    assert Path(host.params.config).read_text() == config
    assert host.loaded() == _identity(config)
    assert not Path("/tmp/pwned").exists()


def test_apply_starts_haproxy_then_is_idempotent(host: Host) -> None:
    config = _config(host.params, _free_port())
    first = host.apply(config)
    assert first.returncode == 0, first.stderr
    master = host.master()
    mtime = os.stat(host.params.config).st_mtime_ns
    workers = _children(master)

    again = host.apply(config)
    assert again.returncode == 0, again.stderr
    assert "unchanged and loaded by the running haproxy" in again.stdout
    assert host.master() == master and _children(master) == workers
    assert os.stat(host.params.config).st_mtime_ns == mtime
    assert not list(Path(host.params.config).parent.glob(".haproxy.cfg.source-ip-edge.*")), "no staging file left"


def test_changed_config_reloads_seamlessly_keeping_the_master(host: Host) -> None:
    port = _free_port()
    old, new = _config(host.params, port), _config(host.params, port, balance="leastconn")
    assert host.apply(old).returncode == 0
    master = host.master()
    result = host.apply(new)
    assert result.returncode == 0, result.stderr
    assert "haproxy runs the new config" in result.stdout
    assert host.master() == master and _alive(master)
    assert host.loaded() == _identity(new)
    assert Path(host.params.config + ".source-ip-edge.prev").read_text() == old
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # still listening


def _stateful_config(
    host: HostParams, port: int, check_port: int, node_2_port: int, balance: str = "roundrobin"
) -> str:
    """Like the rendered config where server states matter: server-state-file, TCP checks on a port
    of their own. HAProxy spreads first checks over `inter` in server order: node-2, first, is
    checked at once; node-1, second, only after 30 s, so what it starts as is what a test sees."""
    body = (
        "# Managed by source-ip-edge (test)\n"
        "global\n"
        f"    stats socket {host.stats_socket} mode 600 level admin expose-fd listeners\n"
        f"    server-state-file {host.server_state_file}\n"
        "\n"
        "defaults\n"
        "    mode tcp\n"
        "    load-server-state-from-file global\n"
        "    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n"
        "\n"
        f"frontend http\n    bind 127.0.0.1:{port}\n    default_backend gateway\n"
        "\n"
        "backend gateway\n"
        f"    balance {balance}\n"
        f"    default-server check port {check_port} inter 60s fall 3 rise 2 send-proxy-v2\n"
        f"    server node-2 [::1]:{node_2_port}\n"
        "    server node-1 127.0.0.1:9\n"
    )
    return body.replace("global\n", f"global\n    description {config_identity(body)}\n", 1)


def _servers_state(host: Host) -> dict[str, dict[str, str]]:
    result = subprocess.run(
        ["socat", "-t", "2", "stdio", f"UNIX-CONNECT:{host.params.stats_socket}"],
        input="show servers state\n",
        capture_output=True,
        text=True,
        timeout=10,
    )
    lines = result.stdout.splitlines()
    columns = lines[1].split()[1:]
    rows = [dict(zip(columns, line.split(), strict=False)) for line in lines[2:] if line.strip()]
    return {row["srv_name"]: row for row in rows}


def test_a_down_server_stays_down_across_a_reload_and_a_changed_server_starts_from_its_config(host: Host) -> None:
    """New workers start every server UP until its first check fails, unless they read the old
    workers' states (server-state-file): the apply saves them before the reload, without the lines
    of servers whose address or port changed (HAProxy would apply the state's port over the config's)."""
    port = _free_port()
    # The checks' port answers on both loopback addresses: checks pass.
    with socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True) as checked:
        check_port = checked.getsockname()[1]
        assert host.apply(_stateful_config(host.params, port, check_port, 10001)).returncode == 0
        for server in ("node-1", "node-2"):
            subprocess.run(
                ["socat", "-t", "2", "stdio", f"UNIX-CONNECT:{host.params.stats_socket}"],
                input=f"set server gateway/{server} health down\n",
                text=True,
                check=True,
                timeout=10,
            )
        assert {row["srv_op_state"] for row in _servers_state(host).values()} == {"0"}  # both DOWN

        result = host.apply(_stateful_config(host.params, port, check_port, 10002, balance="leastconn"))
        assert result.returncode == 0, result.stderr
        after = _servers_state(host)
        assert after["node-1"]["srv_op_state"] == "0", "the DOWN server stays DOWN across the reload"
        assert after["node-2"]["srv_port"] == "10002", "a server whose port changed takes the config's"
        assert after["node-2"]["srv_op_state"] == "2", "and starts from its config, not its old state"
        saved = Path(host.params.server_state_file).read_text()
        assert " node-1 " in saved and " node-2 " not in saved

    assert host.restore().returncode == 0
    assert not Path(host.params.server_state_file).exists(), "destroy removes the saved states"


def test_rejected_config_fails_at_check_and_touches_nothing(host: Host) -> None:
    port = _free_port()
    good = _config(host.params, port)
    assert host.apply(good).returncode == 0
    master, workers = host.master(), _children(host.master())
    result = host.apply(_config(host.params, port, extra="    no-such-keyword 1\n"))
    assert result.returncode != 0 and "rejected" in result.stderr
    assert Path(host.params.config).read_text() == good
    assert host.master() == master and _children(master) == workers
    assert host.apply(good).returncode == 0


def test_reload_that_cannot_bind_is_detected_and_rolled_back(host: Host) -> None:
    # `haproxy -c` passes (it does not bind) but the host has no 192.0.2.99. Debian's unit still
    # returns 0 from `systemctl reload`: only the runtime API tells.
    port = _free_port()
    good = _config(host.params, port)
    assert host.apply(good).returncode == 0
    master = host.master()
    unbindable = _config(host.params, port, bind="192.0.2.99:18080")
    result = host.apply(unbindable)
    assert result.returncode != 0
    assert "did not load the new config" in result.stderr and "previous haproxy.cfg is back" in result.stderr
    assert Path(host.params.config).read_text() == good
    assert host.master() == master and host.loaded() == _identity(good)
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    again = host.apply(good)
    assert again.returncode == 0 and "unchanged and loaded" in again.stdout


def test_file_in_place_but_not_loaded_is_reloaded(host: Host) -> None:
    # The state an apply cut between swap and reload leaves behind.
    port = _free_port()
    old, new = _config(host.params, port), _config(host.params, port, balance="leastconn")
    assert host.apply(old).returncode == 0
    Path(host.params.config).write_text(new)
    result = host.apply(new)
    assert result.returncode == 0, result.stderr
    assert "has not loaded it" in result.stdout
    assert host.loaded() == _identity(new)


def test_apply_killed_between_swap_and_reload_converges_on_the_next_run(systemd_host: Host, tmp_path: Path) -> None:
    host = systemd_host
    port = _free_port()
    old, new = _config(host.params, port), _config(host.params, port, balance="leastconn")
    assert host.apply(old).returncode == 0
    hang = tmp_path / "hang-reload"
    hang.touch()
    host.env["FAKE_SYSTEMD_HANG_RELOAD"] = str(hang)
    cut = host.popen(apply_script(new, host.params))
    deadline = time.monotonic() + 30
    while Path(host.params.config).read_text() != new and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Path(host.params.config).read_text() == new, "the apply reached its swap"
    os.killpg(cut.pid, signal.SIGKILL)  # the SSH session dies: the whole command goes
    cut.wait(timeout=10)
    hang.unlink()
    assert host.loaded() == _identity(old), "killed before the reload"

    result = host.apply(new)
    assert result.returncode == 0, result.stderr
    assert host.loaded() == _identity(new)


def test_two_applies_at_once_take_turns_on_the_host_lock(host: Host) -> None:
    port = _free_port()
    first, second = _config(host.params, port), _config(host.params, port, balance="leastconn")
    assert host.apply(first).returncode == 0
    # Someone holds the lock (another apply): ours says so and waits for it.
    holder = subprocess.Popen(["flock", str(Path(host.params.state_dir) / "lock"), "sleep", "2"])
    time.sleep(0.3)
    started = time.monotonic()
    waited = host.apply(second)
    assert waited.returncode == 0, waited.stderr
    assert "waiting for it" in waited.stdout and time.monotonic() - started >= 1.0
    holder.wait(timeout=10)
    # Two real applies at once: each runs whole, so the live file is one of the two inputs and is
    # the one running (before the lock, a mix of both went live with exit 0).
    a, b = host.popen(apply_script(first, host.params)), host.popen(apply_script(second, host.params))
    assert a.wait(timeout=120) == 0 and b.wait(timeout=120) == 0
    live = Path(host.params.config).read_text()
    assert live in (first, second) and host.loaded() == _identity(live)


def test_rhel_conf_d_is_checked_together_with_our_file(host: Host) -> None:
    port = _free_port()
    conf_d = Path(host.params.conf_d)
    conf_d.mkdir()
    (conf_d / "broken.cfg").write_text("frontend other\n    no-such-keyword 1\n")
    result = host.apply(_config(host.params, port))
    assert result.returncode != 0 and "rejected" in result.stderr
    assert not Path(host.params.config).exists()


# --- the record of the host before us, restore and uninstall --------------------------------------


def test_restore_puts_back_the_original_and_stops_what_we_started(host: Host) -> None:
    original = "# the host's own config\nglobal\n    maxconn 10\n"
    Path(host.params.config).write_text(original)
    assert host.apply(_config(host.params, _free_port())).returncode == 0
    assert host.record()["config_existed"] == "yes" and host.record()["was_running"] == "no"
    master = host.master()
    result = host.restore()
    assert result.returncode == 0, result.stderr
    assert Path(host.params.config).read_text() == original
    assert _wait_dead(master)
    assert not Path(host.params.config + ".source-ip-edge.orig").exists()


def test_restore_removes_our_config_when_the_host_had_none(host: Host) -> None:
    assert host.apply(_config(host.params, _free_port())).returncode == 0
    assert host.restore().returncode == 0
    assert not Path(host.params.config).exists()


def test_restore_keeps_haproxy_running_when_it_ran_before_us(host: Host) -> None:
    port = _free_port()
    # The host's own config (no source-ip-edge marker), with an identity line so the test can
    # read what the running haproxy loaded.
    original = _config(host.params, port, balance="source").replace("# Managed by source-ip-edge (test)", "# mine")
    Path(host.params.config).write_text(original)
    Path(host.params.stats_socket).parent.mkdir()
    assert host.run(f"haproxy -W -D -p {host.params.pidfile} -f {host.params.config}").returncode == 0
    if host.params.service_manager == "systemd":
        (host.systemd / "haproxy").mkdir(parents=True)
        (host.systemd / "haproxy" / "enabled").touch()
    master = host.master()
    assert host.apply(_config(host.params, port)).returncode == 0
    restored = host.restore()
    assert restored.returncode == 0, restored.stderr
    assert Path(host.params.config).read_text() == original
    deadline = time.monotonic() + 10
    while host.loaded() != _identity(original) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host.master() == master and host.loaded() == _identity(original)


def test_restore_without_a_record_keeps_the_live_config_and_process(host: Host) -> None:
    # With the state directory gone, a restore that trusted it would delete haproxy.cfg and stopped
    # the running haproxy.
    config = _config(host.params, _free_port())
    assert host.apply(config).returncode == 0
    master = host.master()
    shutil.rmtree(host.params.state_dir)
    result = host.restore()
    assert result.returncode == 0, result.stderr
    assert "keeping the live haproxy.cfg and service" in result.stdout
    assert Path(host.params.config).read_text() == config
    assert _alive(master)


def test_lost_state_dir_never_takes_our_config_for_the_original(host: Host) -> None:
    original = "# the host's own config\nglobal\n    maxconn 10\n"
    Path(host.params.config).write_text(original)
    port = _free_port()
    assert host.apply(_config(host.params, port)).returncode == 0
    shutil.rmtree(host.params.state_dir)  # the record is lost

    result = host.apply(_config(host.params, port, balance="leastconn"))
    assert result.returncode == 0, result.stderr
    assert "record" in result.stderr and host.record() == {"record": "lost"}
    assert Path(host.params.config + ".source-ip-edge.orig").read_text() == original, "the saved original survives"
    restored = host.restore()
    assert restored.returncode == 0 and "keeping the live" in restored.stdout
    assert "still at" in restored.stdout


def test_the_host_is_recorded_before_our_install_and_uninstall_returns_to_it(systemd_host: Host) -> None:
    # The record must not be taken after the package install (whose postinst enables
    # haproxy.service), or destroy would believe the host had haproxy enabled.
    host = systemd_host
    (host.dpkg / "installed").write_text("base-files\n")
    installed = host.run(install_script(host.params))
    assert installed.returncode == 0, installed.stderr
    assert host.record()["package"] == "no" and host.record()["was_enabled"] == "no"
    install = [c.split() for c in (host.dpkg / "calls").read_text().splitlines() if c.startswith("install")]
    assert install and install[0][-2:] == ["haproxy", "socat"]
    assert (host.systemd / "haproxy" / "enabled").exists(), "the package's postinst enabled it"

    assert host.apply(_config(host.params, _free_port())).returncode == 0
    master = host.master()
    assert host.restore().returncode == 0
    assert _wait_dead(master)
    assert not (host.systemd / "haproxy" / "enabled").exists(), "disabled again, as before us"
    removed = host.run(uninstall_script(host.params))
    assert removed.returncode == 0, removed.stderr
    calls = (host.dpkg / "calls").read_text().splitlines()
    assert calls[-1].split()[0] == "purge" and set(calls[-1].split()[-3:]) == {"haproxy", "liblua5.3-0", "socat"}
    assert (host.dpkg / "installed").read_text().split() == ["base-files"]
    assert not Path(host.params.state_dir).exists()


def test_install_records_an_existing_haproxy_and_leaves_packages_alone(systemd_host: Host) -> None:
    host = systemd_host
    (host.dpkg / "installed").write_text("haproxy\nsocat\n")
    result = host.run(install_script(host.params))
    assert result.returncode == 0, result.stderr
    assert "already installed" in result.stdout and host.record()["package"] == "yes"
    assert host.run(uninstall_script(host.params)).returncode == 0
    assert (host.dpkg / "installed").read_text().split() == ["haproxy", "socat"]
