"""The access lists HAProxy enforces at the edge: one file per list on each host, and a summary of
it for the command that applies it.

Pure: the same StackConfig always gives the same bytes. The file holds the merged list (adjacent
and overlapping networks collapsed, IPv4 then IPv6, each sorted), which haproxy.cfg loads with
`src -f` into a prefix tree; the hosts' apply (access_list_apply.sh) puts it on disk and into the
running HAProxy through its runtime API, without a reload.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from components.config import AccessSettings
from components.haproxy_host.haproxy_cfg import edge_lists

MARKER = "# Managed by source-ip-edge"  # every file we write starts with it (lib.sh, MARKER)


@dataclass(frozen=True)
class EdgeList:
    which: str
    """'allow' or 'deny'."""
    path: str
    """The file on each host that haproxy.cfg names."""
    text: str
    """The whole file."""
    entries: int
    """Networks in the file (after merging)."""
    sha256: str
    """Of the whole file: what the hosts check the copy they got against."""
    summary: str
    """A few comment lines for the command's text: what `pulumi preview --diff` shows of a change."""


def render_edge_lists(access: AccessSettings) -> list[EdgeList]:
    """The files of the lists enforced at the edge, deny first."""
    result = []
    for which, path in edge_lists(access).items():
        blocks = access.deny_blocks if which == "deny" else access.allow_blocks
        lines = list(blocks)
        text = (
            f"{MARKER} (Pulumi): access.{which}, enforced by HAProxy (tcp-request connection reject).\n"
            "# Replaced by the next `pulumi up` that changes the list; edit the stack's lists instead.\n"
            + "".join(f"{line}\n" for line in lines)
        )
        sha256 = hashlib.sha256(text.encode()).hexdigest()
        result.append(EdgeList(which, path, text, len(lines), sha256, _summary(access, which, lines, sha256)))
    return result


def _summary(access: AccessSettings, which: str, lines: list[str], sha256: str) -> str:
    inline = len(getattr(access, which))
    files = getattr(access, f"{which}_files")
    sources = [f"{inline} in access.{which}"] + [f"{f.entries} lines in {f.path}" for f in files]
    return (
        f"# access.{which}: {access.count(which)} networks ({', '.join(sources)}); {len(lines)} after merging\n"
        f"# first {lines[0]}, last {lines[-1]}; sha256 {sha256}\n"
    )
