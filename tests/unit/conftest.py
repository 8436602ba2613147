"""Shared builders for unit tests: a valid raw configuration to mutate."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components.config import StackConfig, parse_stack_config
from components.haproxy_host.haproxy_cfg import ACCESS_LIST_FILES, SERVER_STATE_FILE

ROOT = Path(__file__).resolve().parents[2]
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHBGKfyAcxm9D8pOf8FS3yH4MTmOd5yqHvq2NI6DdM7h"


def valid_raw() -> dict[str, Any]:
    return copy.deepcopy(
        {
            "haproxy": {"hosts": [{"name": "edge-1", "address": "203.0.113.10", "hostKey": HOST_KEY}]},
            "gateway": {"nodes": ["192.0.2.50", "192.0.2.51"]},
            "istio": {"version": "1.31.4"},
            "proxyProtocol": {"mode": "envoyfilter", "strict": True},
            "access": {"allow": [], "deny": []},
        }
    )


def make_config(mutate=None) -> StackConfig:
    raw = valid_raw()
    if mutate:
        mutate(raw)
    return parse_stack_config(raw)


def haproxy_check(text: str, tmp_path: Path, edge_lists=()) -> subprocess.CompletedProcess:
    """`haproxy -c` on a config; HAProxy is installed by `make setup`, so a missing one fails. The
    access list files it names are written beside it, as the hosts have them (`edge_lists`,
    render_edge_lists; an empty file for one not given)."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(binary).exists(), "haproxy is not installed: run `make setup`"
    # On a host the server-state file exists once haproxy has started (lib.sh, save_server_state);
    # here it is a file of the test's own, with no states in it.
    state = tmp_path / "server-state"
    state.write_text("1\n")
    text = text.replace(f"server-state-file {SERVER_STATE_FILE}\n", f"server-state-file {state}\n")
    texts = {edge_list.path: edge_list.text for edge_list in edge_lists}
    for which, list_path in ACCESS_LIST_FILES.items():
        if list_path in text:
            local = tmp_path / f"{which}.acl"
            local.write_text(texts.get(list_path, ""))
            text = text.replace(list_path, str(local))
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    return subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True)


@pytest.fixture
def raw():
    return valid_raw()
