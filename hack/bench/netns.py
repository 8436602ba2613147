"""Network namespaces the bench makes for itself, and the processes it runs in them, all removed
on exit (also on failure): processes by the pids it started or finds in its own namespaces,
then the namespaces. Addresses are documentation ranges that exist only inside them."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


class BenchNamespaces:
    """visitor — router — edge, router — gateway: a kernel-routed path and a proxied one.

    Each end namespace has one veth to the router, a /24 of its own, and a default route through it.
    """

    def __init__(self, prefix: str, links: dict[str, tuple[str, str]], run_dir: Path):
        """links: role -> (its address, the router's address on that link), both in one /24."""
        self.prefix = prefix
        self.links = links
        self.run_dir = run_dir
        self.router = f"{prefix}-rt"
        self.namespaces = [self.router, *(self.ns(role) for role in links)]
        self.processes: list[subprocess.Popen] = []

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def address(self, role: str) -> str:
        return self.links[role][0]

    def __enter__(self) -> BenchNamespaces:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # One bench at a time: a second one would remove the first one's namespaces.
        self._lock = open(self.run_dir / "lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"another bench is running (lock {self.run_dir / 'lock'})") from None
        self._remove()  # what an interrupted earlier run of this bench left
        try:
            self._create()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for process in reversed(self.processes):
            stop(process)
        self.processes.clear()
        self._remove()
        # Nothing of the run stays in /run: the configs, sockets and the lock file go with it.
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._lock.close()

    def _create(self) -> None:
        for ns in self.namespaces:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # Connection-per-request runs open tens of thousands of connections: the whole port range.
            self.sysctl(ns, "net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1")
        self.sysctl(self.router, "net.ipv4.ip_forward=1")
        for role, (address, router_address) in self.links.items():
            ns, port = self.ns(role), f"to-{role}"
            _ip("-n", self.router, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.router, "addr", "add", f"{router_address}/24", "dev", port)
            _ip("-n", self.router, "link", "set", port, "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "route", "add", "default", "via", router_address)

    @staticmethod
    def sysctl(ns: str, *settings: str) -> None:
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", *settings], check=True, timeout=10)

    def spawn(self, role: str, argv: list[str], log_name: str) -> subprocess.Popen:
        """A long-running process in a namespace; `ip netns exec` execs it, so the pid is its own."""
        with open(self.run_dir / log_name, "ab") as log:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(role), *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        stop(process)
        if process in self.processes:
            self.processes.remove(process)

    def run(self, role: str, argv: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(role), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )

    def _remove(self) -> None:
        existing = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
        for ns in self.namespaces:
            if ns not in existing:
                continue
            # Only processes inside this bench's own namespaces, by pid.
            pids = [
                int(p)
                for p in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            ]
            for pid in pids:
                _signal(pid, signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10)


def stop(process: subprocess.Popen, grace: float = 5) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds: to the pid we started, never by name."""
    if process.poll() is not None:
        return
    _signal(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal(process.pid, signal.SIGKILL)
        process.wait(timeout=grace)


def exit_on_sigterm() -> None:
    """SIGTERM (e.g. from `timeout`) ends the bench like Ctrl-C does: through its finally blocks."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def wait_until(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not ready after {seconds:.0f}s")


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)
