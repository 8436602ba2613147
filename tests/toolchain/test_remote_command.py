"""remote.Command over real SSH (a throwaway sshd on 127.0.0.1), as HAProxyHost provisions hosts."""

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.toolchain.helpers import new_project, run_pulumi

SSHD = Path("/usr/sbin/sshd")


@dataclass
class SshServer:
    port: int
    user: str
    client_key: str
    host_key: str  # the server's public key, authorized_keys format


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    assert SSHD.is_file(), "sshd is missing: make setup-system installs openssh-server"
    d = tmp_path / "sshd"
    d.mkdir()
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    port = free_port()
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d / 'host'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n"
        # The previous output reaches the command over SSH setenv only where the server accepts it.
        "AcceptEnv PULUMI_COMMAND_STDOUT PULUMI_COMMAND_STDERR\n"
    )
    server = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=(d / "sshd.log").open("w"),
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, (d / "sshd.log").read_text()
                time.sleep(0.1)
        host_key = " ".join((d / "host.pub").read_text().split()[:2])
        yield SshServer(
            port,
            os.environ.get("USER") or subprocess.check_output(["id", "-un"], text=True).strip(),
            (d / "client").read_text(),
            host_key,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)


def remote_project(tmp_path: Path, env: dict[str, str], server: SshServer, host_key: str) -> Path:
    return new_project(
        "remote_command",
        tmp_path,
        env,
        ["pulumi-resource-command"],
        {
            "marker": str(tmp_path / "marker"),
            "port": str(server.port),
            "user": server.user,
            "hostKey": host_key,
            "content": "first",
        },
        secrets={"privateKey": server.client_key},
    )


def test_remote_command_runs_over_ssh_updates_and_deletes(
    sshd: SshServer, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    project = remote_project(tmp_path, pulumi_env, sshd, sshd.host_key)

    run_pulumi(pulumi_env, project, "up", "--yes", "--skip-preview")
    assert (tmp_path / "marker").read_text() == "first"
    # The connection is secret, so the command's output is too.
    assert json.loads(run_pulumi(pulumi_env, project, "stack", "output", "--json").stdout)["stdout"] == "[secret]"
    shown = json.loads(run_pulumi(pulumi_env, project, "stack", "output", "--json", "--show-secrets").stdout)
    assert shown["stdout"] == "wrote-first"

    run_pulumi(pulumi_env, project, "preview", "--expect-no-changes")
    run_pulumi(pulumi_env, project, "config", "set", "content", "second")
    run_pulumi(pulumi_env, project, "up", "--yes", "--skip-preview")
    assert (tmp_path / "marker").read_text() == "second"
    shown = json.loads(run_pulumi(pulumi_env, project, "stack", "output", "--json", "--show-secrets").stdout)
    assert shown["stdout"] == "rewrote-second after wrote-first"

    run_pulumi(pulumi_env, project, "destroy", "--yes", "--skip-preview")
    assert not (tmp_path / "marker").exists()


def test_remote_command_refuses_a_server_with_another_host_key(
    sshd: SshServer, pulumi_env: dict[str, str], tmp_path: Path
) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong_key = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    project = remote_project(tmp_path, pulumi_env, sshd, wrong_key)

    proc = run_pulumi(pulumi_env, project, "up", "--yes", "--skip-preview", check=False)

    assert proc.returncode != 0
    assert "host key mismatch" in proc.stdout + proc.stderr
    assert not (tmp_path / "marker").exists()
