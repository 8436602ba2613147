"""The lab's gateway stand-in, run on loopback for unit tests: the nginx.conf the lab runs
(hack/lab/gateway-standin-conf.sh), with loopback addresses and free ports, as a plain process."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from components.config import NODE_PORT_RANGE
from tests.unit.conftest import ROOT

CONF_SCRIPT = ROOT / "hack" / "lab" / "gateway-standin-conf.sh"


@dataclass(frozen=True)
class NodePorts:
    http: int
    https: int
    status: int


@dataclass
class Standin:
    address: str
    ports: NodePorts
    process: subprocess.Popen
    dir: Path

    def stop(self) -> None:
        stop_process(self.process)


def binary(name: str) -> str:
    """A Debian package's binary; `make setup` installs haproxy and nginx-light, so missing is a failure."""
    path = shutil.which(name) or f"/usr/sbin/{name}"
    assert Path(path).exists(), f"{name} is not installed: run `make setup`"
    return path


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM by pid, then SIGKILL if it has not exited within 5 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def free_node_ports(addresses: list[str]) -> NodePorts:
    """Three ports in the NodePort range that nothing listens on at any of `addresses` right now."""
    chosen: list[int] = []
    while len(chosen) < 3:
        port = random.choice(NODE_PORT_RANGE)
        if port not in chosen and all(_can_bind(address, port) for address in addresses):
            chosen.append(port)
    return NodePorts(*chosen)


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _can_bind(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
        return True


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "gateway.crt", directory / "gateway.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=gateway.test.invalid",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def start_standin(workdir: Path, address: str, ports: NodePorts, cert: Path, key: Path) -> Standin:
    """nginx in the foreground with the stand-in's generated config; returns once it accepts connections."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    env = dict(
        os.environ,
        STANDIN_NAME=f"test-{address}",
        STANDIN_ADDRESS=address,
        STANDIN_DIR=str(workdir),
        STANDIN_PID_FILE=str(workdir / "nginx.pid"),
        HTTP_PORT=str(ports.http),
        HTTPS_PORT=str(ports.https),
        STATUS_PORT=str(ports.status),
        TLS_CERT=str(cert),
        TLS_KEY=str(key),
    )
    conf = subprocess.run(
        ["bash", str(CONF_SCRIPT)], env=env, check=True, capture_output=True, text=True, timeout=30
    ).stdout
    (workdir / "nginx.conf").write_text(conf)
    process = subprocess.Popen(
        [
            binary("nginx"),
            "-q",
            "-c",
            str(workdir / "nginx.conf"),
            "-p",
            str(workdir),
            "-e",
            str(workdir / "error.log"),
            "-g",
            "daemon off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    standin = Standin(address=address, ports=ports, process=process, dir=workdir)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited {process.returncode}: {process.stderr.read()}")
        try:
            socket.create_connection((address, ports.status), timeout=1).close()
            return standin
        except OSError:
            time.sleep(0.05)
    standin.stop()
    raise RuntimeError(f"the gateway stand-in on {address}:{ports.status} did not accept connections in 10 s")


def start_standins(workdir: Path, addresses: list[str]) -> list[Standin]:
    """One stand-in per address, all on the same NodePorts (as on a cluster's nodes). Ports are
    chosen free just before nginx binds them; if another process takes one in between, new ports."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed_certificate(workdir)
    for attempt in range(3):
        ports = free_node_ports(addresses)
        started: list[Standin] = []
        try:
            for address in addresses:
                started.append(start_standin(workdir / f"{address}-{attempt}", address, ports, cert, key))
            return started
        except RuntimeError:
            for standin in started:
                standin.stop()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
