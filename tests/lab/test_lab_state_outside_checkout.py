"""While the lab runs, nothing live of it is in the checkout: no mount, no host root, no key, no device node.

A host root with /proc mounted inside the worktree once made `cp -r` of the checkout write 65 GB.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from hack.lab.labkit import REPO


def _mount_points() -> list[Path]:
    return [Path(_unescape(line.split()[1])) for line in Path("/proc/self/mounts").read_text().splitlines()]


def _unescape(field: str) -> str:
    """/proc/self/mounts writes blanks and backslashes in paths as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def test_no_mount_and_no_live_file_of_the_running_lab_is_in_the_checkout(edge) -> None:
    repo = REPO.resolve()
    assert edge.lab.host_init_pid() is not None, "the lab's HAProxy host is running"
    assert [m for m in _mount_points() if m.is_relative_to(repo)] == []
    for live in (edge.lab.run_dir, edge.lab.host_root, edge.lab.private_key_file, edge.lab.known_hosts_file):
        assert not live.resolve().is_relative_to(repo), live
    # A host root anywhere in the checkout would bring its /dev nodes; a live process, its sockets.
    special = []
    for directory, _, files in os.walk(repo):  # does not follow symlinks
        for name in files:
            mode = os.lstat(os.path.join(directory, name)).st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
                special.append(os.path.join(directory, name))
    assert special == []
