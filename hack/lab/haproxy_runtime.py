"""HAProxy's runtime API over its UNIX socket: the servers' states and last checks, as HAProxy sees them.

Used by the lab tests (the lab host's admin socket) and the unit tests (a local haproxy), so a
server's health is read from HAProxy itself, never from a log line. Standard library only.
"""

from __future__ import annotations

import csv
import socket
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerState:
    backend: str
    server: str
    status: str
    """UP, DOWN, MAINT, ... (`show stat` status; "UP 1/2" while going down, "DOWN 1/2" while going up)."""
    check_status: str
    """The last check's result: L7OK, L7STS (unexpected HTTP status), L4CON, ...; INI before any."""
    check_code: str
    """The HTTP status code of the last check, if it got one."""

    @property
    def settled(self) -> bool:
        """A check has run and the state follows from it (a server starts UP before any check)."""
        return self.check_status not in ("", "INI") and self.status in ("UP", "DOWN")


def runtime_command(socket_path: Path | str, command: str, timeout: float = 5) -> str:
    """One command on the runtime API (non-interactive: HAProxy answers, then closes)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def server_states(socket_path: Path | str) -> list[ServerState]:
    """Every server of every backend, from `show stat` (CSV, header line starting with '# ')."""
    text = runtime_command(socket_path, "show stat")
    rows = csv.DictReader(text.removeprefix("# ").splitlines())
    return [
        ServerState(
            backend=row["pxname"],
            server=row["svname"],
            status=row["status"],
            # "* " marks a check in progress; the result shown is still the last one.
            check_status=row["check_status"].removeprefix("* "),
            check_code=row["check_code"],
        )
        for row in rows
        if row.get("svname") not in (None, "FRONTEND", "BACKEND")
    ]


def wait_until_checked(socket_path: Path | str, timeout: float = 15) -> list[ServerState]:
    """Polls until every server (at least one) has settled after a check, or the timeout passes;
    returns the last states either way, for the caller's assertion to show."""
    deadline = time.monotonic() + timeout
    while True:
        states = server_states(socket_path)
        if states and all(state.settled for state in states):
            return states
        if time.monotonic() >= deadline:
            return states
        time.sleep(0.2)
