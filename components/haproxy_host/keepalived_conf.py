"""Render keepalived.conf for one HAProxy host of an HA pair: one VRRP instance holding the VIP,
which leaves a host whose HAProxy stops answering on its runtime API.

Pure: no pulumi import, and no secret: the VRRP password and the interface are filled in on the
host (keepalived_apply.sh) as keepalived's own `$NAME=value` definitions at the top of the live
file, so this text, which sits in the command `pulumi preview --diff` shows, carries none.
"""

from __future__ import annotations

from components.config import SshHost, StackConfig
from components.haproxy_host.haproxy_cfg import ADMIN_SOCKET

KEEPALIVED_MARKER = "# Managed by source-ip-edge"  # the first line of every keepalived.conf we write
CHECK_SCRIPT = "/etc/keepalived/source-ip-edge-check-haproxy"
LOADED_FILE = "/run/keepalived-source-ip-edge.loaded"
"""The check script writes the identity it was started with here: the config keepalived runs."""
INSTANCE = "source_ip_edge"
# Definitions keepalived_apply.sh writes above the rendered text (keepalived.conf(5), "$NAME=value").
INTERFACE_PARAM = "SOURCE_IP_EDGE_INTERFACE"
PASSWORD_PARAM = "SOURCE_IP_EDGE_VRRP_PASSWORD"
IDENTITY_PARAM = "SOURCE_IP_EDGE_IDENTITY"


def render_keepalived_config(config: StackConfig, host: SshHost) -> str:
    """keepalived.conf for `host` (the hosts differ only in priority and router_id)."""
    vip = config.haproxy.vip
    assert vip is not None, "render_keepalived_config needs haproxy.vip"
    return f"""\
# The VIP {vip.address} of the source-ip-edge HAProxy hosts ({", ".join(h.name for h in config.haproxy.hosts)}).
# It stays on the host that holds it while that host's HAProxy answers on its runtime API.

global_defs {{
    router_id {host.name}
    # HAProxy's runtime API socket is root's (mode 600): the check runs as root, from a file only
    # root can write.
    script_user root
    enable_script_security
}}

# The stats socket answering, not only a haproxy process: a master without workers, or one
# whose reload failed, must not keep the VIP. Two failures in a row (2 s) move it.
vrrp_script haproxy_answers {{
    script "{CHECK_SCRIPT} {ADMIN_SOCKET} {LOADED_FILE} ${{{IDENTITY_PARAM}}}"
    interval 1
    timeout 2
    fall 2
    rise 2
}}

vrrp_instance {INSTANCE} {{
    # Every host starts as BACKUP with nopreempt: a host coming back does not take the VIP back,
    # which would cut the visitors' connections a second time.
    state BACKUP
    nopreempt
    interface ${INTERFACE_PARAM}
    virtual_router_id {vip.virtual_router_id}
    priority {vip.priorities[host.name]}
    advert_int 1
    authentication {{
        auth_type PASS
        auth_pass ${PASSWORD_PARAM}
    }}
{_unicast(config, host)}    virtual_ipaddress {{
        {vip.address} dev ${INTERFACE_PARAM}
    }}
    # No weight: a failing check puts the instance in FAULT, which gives the VIP up at once.
    track_script {{
        haproxy_answers
    }}
}}
"""


def _unicast(config: StackConfig, host: SshHost) -> str:
    """haproxy.vip.unicast: adverts from this host's address to the others', not to 224.0.0.18."""
    vip = config.haproxy.vip
    if vip is None or not vip.unicast:
        return ""
    peers = "".join(f"        {other.address}\n" for other in config.haproxy.hosts if other is not host)
    return (
        f"    # haproxy.vip.unicast: adverts go to the other hosts, not to the multicast group.\n"
        f"    unicast_src_ip {host.address}\n    unicast_peer {{\n{peers}    }}\n"
    )
