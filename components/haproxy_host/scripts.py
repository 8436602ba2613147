"""The commands HAProxyHost runs on each host over SSH, assembled from the .sh files beside this.

Pure: no pulumi import. Each command is plain text that `pulumi preview --diff` shows in full:
the parameters as shell assignments, lib.sh (and keepalived_lib.sh where keepalived is
concerned), then the script (install, apply, restore, uninstall, keepalived_apply or
keepalived_restore). No secret is ever in a command's text: keepalived_apply.sh reads the VRRP
password from stdin, a secret input of its own. The scripts are real shell files that shellcheck
reads; they are parameterised by those upper-case variables (lib.sh lists them), never by replacing text inside them.

apply.sh gets the new haproxy.cfg from a function `new_config` holding it in a quoted heredoc,
byte for byte and readable, so a preview shows the changed lines of the config.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from components.haproxy_host.haproxy_cfg import ADMIN_SOCKET, SERVER_STATE_FILE
from components.haproxy_host.keepalived_conf import CHECK_SCRIPT, LOADED_FILE

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
    server_state_file: str = SERVER_STATE_FILE
    """haproxy.cfg's server-state-file, written before each reload (lib.sh, save_server_state)."""
    service_manager: str = "auto"
    """auto (systemd when it runs as PID 1), systemd, or pidfile (a master-worker we start)."""
    conf_d: str = "/etc/haproxy/conf.d"
    """A directory the RHEL unit loads after haproxy.cfg; checked with it when it exists."""
    keepalived_conf: str = "/etc/keepalived/keepalived.conf"
    """The live keepalived.conf (an HA pair with a VIP)."""
    keepalived_pidfile: str = "/run/keepalived.pid"
    """keepalived's pid file where no systemd runs it (Debian's default)."""
    check_script: str = CHECK_SCRIPT
    """The vrrp_script keepalived.conf runs: HAProxy answering on its runtime API."""
    loaded_file: str = LOADED_FILE
    """Where that check writes the identity of the keepalived.conf keepalived runs."""

    def assignments(self) -> str:
        values = {
            "HAPROXY_CFG": self.config,
            "STATE_DIR": self.state_dir,
            "PIDFILE": self.pidfile,
            "STATS_SOCKET": self.stats_socket,
            "SERVER_STATE_FILE": self.server_state_file,
            "SERVICE_MANAGER": self.service_manager,
            "CONF_D": self.conf_d,
            "KEEPALIVED_CONF": self.keepalived_conf,
            "KEEPALIVED_PIDFILE": self.keepalived_pidfile,
            "CHECK_SCRIPT": self.check_script,
            "LOADED_FILE": self.loaded_file,
        }
        return "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())


def script_text(name: str) -> str:
    return (SCRIPTS_DIR / name).read_text()


def _command(script: str, params: HostParams, definitions: str = "", *, keepalived: bool = False) -> str:
    libraries = ("lib.sh", "keepalived_lib.sh") if keepalived else ("lib.sh",)
    return (
        f"set -eu\n# source-ip-edge {script}: parameters, {', '.join(libraries)}, {script}"
        " (components/haproxy_host)\n"
        + params.assignments()
        + definitions
        + "".join(script_text(library) for library in libraries)
        + script_text(script)
    )


def _text_function(name: str, text: str) -> str:
    """A shell function that prints ``text`` byte for byte (a quoted heredoc: nothing expands)."""
    if not text.endswith("\n"):
        text += "\n"
    delimiter = heredoc_delimiter(text)
    return f"{name}() {{\ncat <<'{delimiter}'\n{text}{delimiter}\n}}\n"


def heredoc_delimiter(text: str) -> str:
    """A heredoc end marker that no line of ``text`` equals."""
    lines = set(text.splitlines())
    delimiter, n = HEREDOC_DELIMITER, 0
    while delimiter in lines:
        n += 1
        delimiter = f"{HEREDOC_DELIMITER}_{n}"
    return delimiter


def install_script(params: HostParams = HostParams(), *, with_keepalived: bool = False) -> str:
    """Record the host as it is, then install haproxy and socat, and keepalived for a VIP.
    Create command of `install`."""
    definitions = "WITH_KEEPALIVED=yes\n" if with_keepalived else ""
    return _command("install.sh", params, definitions, keepalived=True)


def uninstall_script(params: HostParams = HostParams()) -> str:
    """Remove what install added, as the record says. Delete command of `install`."""
    return _command("uninstall.sh", params, keepalived=True)


def apply_script(config_text: str, params: HostParams = HostParams()) -> str:
    """Stage, check, swap and seamlessly reload ``config_text``; verified through the runtime API."""
    if not config_text.endswith("\n"):
        config_text += "\n"
    delimiter = heredoc_delimiter(config_text)
    definitions = f"new_config() {{\ncat <<'{delimiter}'\n{config_text}{delimiter}\n}}\n"
    return _command("apply.sh", params, definitions)


def access_list_apply_script(
    which: str, path: str, sha256: str, entries: int, summary: str, params: HostParams = HostParams()
) -> str:
    """Check, swap in and load into the running HAProxy (runtime API, no reload) the list file that
    comes on stdin. The text names the list by its count and hash (`summary`), never its content:
    a preview shows those lines change, not the networks."""
    definitions = (
        summary
        + f"LIST_NAME={shlex.quote(which)}\nLIST_FILE={shlex.quote(path)}\n"
        + f"LIST_SHA256={sha256}\nLIST_ENTRIES={entries}\n"
    )
    return _command("access_list_apply.sh", params, definitions)


def access_list_remove_script(which: str, path: str, params: HostParams = HostParams()) -> str:
    """Remove the list file. Delete command of the allow-list and deny-list."""
    return _command("access_list_remove.sh", params, f"LIST_NAME={shlex.quote(which)}\nLIST_FILE={shlex.quote(path)}\n")


def restore_script(params: HostParams = HostParams()) -> str:
    """Put the config and service back as recorded. Delete command of `config`."""
    return _command("restore.sh", params)


def keepalived_apply_script(
    keepalived_config: str, vip_network: str, vip_interface: str | None, params: HostParams = HostParams()
) -> str:
    """Stage, check (`keepalived -t`), swap and reload keepalived.conf, verified by the identity its
    vrrp_script reports; the VRRP password comes on stdin. Create command of `keepalived`."""
    definitions = (
        f"VIP_NETWORK={shlex.quote(vip_network)}\n"
        f"VIP_INTERFACE={shlex.quote(vip_interface or '')}\n"
        + _text_function("new_keepalived_config", keepalived_config)
        + _text_function("new_check_script", script_text("check_haproxy.sh"))
    )
    return _command("keepalived_apply.sh", params, definitions, keepalived=True)


def keepalived_restore_script(params: HostParams = HostParams()) -> str:
    """Put keepalived back as recorded; the VIP moves to another host. Delete command of `keepalived`."""
    return _command("keepalived_restore.sh", params, keepalived=True)
