"""The commands HAProxyHost runs on each host over SSH, assembled from the .sh files beside this.

Pure: no pulumi import. Each command is plain text that `pulumi preview --diff` shows in full:
the parameters as shell assignments, lib.sh, then the script (install, apply, restore or
uninstall). The scripts are real shell files that shellcheck reads; they are parameterised by
those upper-case variables (lib.sh lists them), never by replacing text inside them.

apply.sh gets the new haproxy.cfg from a function `new_config` holding it in a quoted heredoc,
byte for byte and readable, so a preview shows the changed lines of the config.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from source_ip_edge.render.haproxy_host.haproxy_cfg import ADMIN_SOCKET

SCRIPTS_DIR = Path(__file__).resolve().parent
HEREDOC_DELIMITER = "SOURCE_IP_EDGE_HAPROXY_CFG"


@dataclass(frozen=True)
class HostParams:
    """Where the scripts find things on a host; the defaults match Debian's and RHEL's packages."""

    config: str = "/etc/haproxy/haproxy.cfg"
    """The live configuration the haproxy service reads."""
    state_dir: str = "/var/lib/source-ip-edge"
    """The record of the host before us, the packages we installed, the host lock."""
    pidfile: str = "/run/haproxy.pid"
    """The master's pid file (both distributions' units write it here)."""
    stats_socket: str = ADMIN_SOCKET
    """haproxy.cfg's runtime API socket, which reports what the running workers loaded."""
    service_manager: str = "auto"
    """auto (systemd when it runs as PID 1), systemd, or pidfile (a master-worker we start)."""
    conf_d: str = "/etc/haproxy/conf.d"
    """A directory the RHEL unit loads after haproxy.cfg; checked with it when it exists."""

    def assignments(self) -> str:
        values = {
            "HAPROXY_CFG": self.config,
            "STATE_DIR": self.state_dir,
            "PIDFILE": self.pidfile,
            "STATS_SOCKET": self.stats_socket,
            "SERVICE_MANAGER": self.service_manager,
            "CONF_D": self.conf_d,
        }
        return "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())


def script_text(name: str) -> str:
    return (SCRIPTS_DIR / name).read_text()


def _command(script: str, params: HostParams, definitions: str = "") -> str:
    return (
        f"set -eu\n# source-ip-edge {script}: parameters, lib.sh, {script} (source_ip_edge/render/haproxy_host)\n"
        + params.assignments()
        + definitions
        + script_text("lib.sh")
        + script_text(script)
    )


def heredoc_delimiter(text: str) -> str:
    """A heredoc end marker that no line of ``text`` equals."""
    lines = set(text.splitlines())
    delimiter, n = HEREDOC_DELIMITER, 0
    while delimiter in lines:
        n += 1
        delimiter = f"{HEREDOC_DELIMITER}_{n}"
    return delimiter


def install_script(params: HostParams = HostParams()) -> str:
    """Record the host as it is, then install haproxy and socat. Create command of `install`."""
    return _command("install.sh", params)


def uninstall_script(params: HostParams = HostParams()) -> str:
    """Remove what install added, as the record says. Delete command of `install`."""
    return _command("uninstall.sh", params)


def apply_script(config_text: str, params: HostParams = HostParams()) -> str:
    """Stage, check, swap and seamlessly reload ``config_text``; verified through the runtime API."""
    if not config_text.endswith("\n"):
        config_text += "\n"
    delimiter = heredoc_delimiter(config_text)
    definitions = f"new_config() {{\ncat <<'{delimiter}'\n{config_text}{delimiter}\n}}\n"
    return _command("apply.sh", params, definitions)


def restore_script(params: HostParams = HostParams()) -> str:
    """Put the config and service back as recorded. Delete command of `config`."""
    return _command("restore.sh", params)
