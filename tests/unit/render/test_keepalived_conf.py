"""keepalived.conf per host (render/haproxy_host/keepalived_conf.py), checked by keepalived itself,
and the haproxy.cfg parts an HA pair adds: `transparent` on VIP binds and the metrics listener."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from components.config import parse_stack_config
from components.haproxy_host.haproxy_cfg import render_haproxy_config
from components.haproxy_host.keepalived_conf import (
    CHECK_SCRIPT,
    IDENTITY_PARAM,
    INTERFACE_PARAM,
    PASSWORD_PARAM,
    render_keepalived_config,
)
from components.haproxy_host.scripts import SCRIPTS_DIR

from ..conftest import haproxy_check, valid_raw

PASSWORD = "pw-12345"


def _pair_config(frontends=None, metrics=None, unicast=False, hosts=2):
    raw = valid_raw()
    for n in range(2, hosts + 1):
        raw["haproxy"]["hosts"].append(dict(raw["haproxy"]["hosts"][0], name=f"edge-{n}", address=f"203.0.113.{9 + n}"))
    raw["haproxy"]["vip"] = {"address": "203.0.113.100/24", "virtualRouterId": 51, "unicast": unicast}
    if frontends:
        raw["haproxy"]["frontends"] = frontends
    if metrics:
        raw["haproxy"]["metrics"] = metrics
    return parse_stack_config(raw, vrrp_password=PASSWORD)


def _an_interface() -> str:
    """keepalived -t refuses an interface the machine lacks, and loopback; any other one will do."""
    names = sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo")
    assert names, "the lab machine has no network interface but lo"
    return names[0]


def _as_on_the_host(text: str, interface: str) -> str:
    """What keepalived_apply.sh writes: its definitions, then the rendered text."""
    return (
        "# Managed by source-ip-edge (Pulumi): test\n"
        f"${INTERFACE_PARAM}={interface}\n${PASSWORD_PARAM}={PASSWORD}\n${IDENTITY_PARAM}=sha256=0\n" + text
    )


def test_each_host_gets_its_own_priority_and_router_id():
    config = _pair_config()
    first, second = (render_keepalived_config(config, host) for host in config.haproxy.hosts)
    assert "priority 150" in first and "router_id edge-1" in first
    assert "priority 140" in second and "router_id edge-2" in second
    assert first.replace("150", "X").replace("edge-1\n", "Y\n") == second.replace("140", "X").replace("edge-2\n", "Y\n")


def test_rendered_config_holds_no_secret_and_no_host_specific_interface():
    config = _pair_config()
    text = render_keepalived_config(config, config.haproxy.hosts[0])
    assert PASSWORD not in text
    assert f"auth_pass ${PASSWORD_PARAM}" in text and f"interface ${INTERFACE_PARAM}" in text


def test_vip_follows_haproxy_answering_on_its_runtime_api():
    config = _pair_config()
    text = render_keepalived_config(config, config.haproxy.hosts[0])
    assert f'script "{CHECK_SCRIPT} /run/haproxy/admin.sock' in text
    assert "track_script {\n        haproxy_answers\n    }" in text
    assert not [line for line in text.splitlines() if line.strip().startswith("weight")], (
        "a weight only lowers the priority; FAULT gives the VIP up"
    )
    assert "nopreempt" in text and "state BACKUP" in text


def test_multicast_by_default_and_unicast_to_every_other_host_when_asked():
    config = _pair_config()
    assert "unicast" not in render_keepalived_config(config, config.haproxy.hosts[0])
    config = _pair_config(unicast=True, hosts=3)
    for host in config.haproxy.hosts:
        text = render_keepalived_config(config, host)
        others = "".join(f"        {h.address}\n" for h in config.haproxy.hosts if h is not host)
        assert f"    unicast_src_ip {host.address}\n    unicast_peer {{\n{others}    }}\n" in text, text


@pytest.mark.parametrize("unicast", [False, True])
def test_keepalived_accepts_the_config_as_the_host_writes_it(tmp_path: Path, unicast: bool):
    keepalived = shutil.which("keepalived", path="/usr/sbin:/sbin:/usr/bin")
    assert keepalived, "keepalived is not installed: run `make setup`"
    config = _pair_config(unicast=unicast)
    path = tmp_path / "keepalived.conf"
    # keepalived -t also refuses a vrrp_script it cannot find (keepalived_apply.sh installs it
    # first): the real check script, at a path of the test's own.
    check = tmp_path / "check-haproxy"
    shutil.copy(SCRIPTS_DIR / "check_haproxy.sh", check)
    check.chmod(0o755)
    text = render_keepalived_config(config, config.haproxy.hosts[1]).replace(CHECK_SCRIPT, str(check))
    path.write_text(_as_on_the_host(text, _an_interface()))
    result = subprocess.run([keepalived, "-t", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    path.write_text(_as_on_the_host(render_keepalived_config(config, config.haproxy.hosts[1]), _an_interface()))
    if not Path(CHECK_SCRIPT).exists():
        missing = subprocess.run([keepalived, "-t", "-f", str(path)], capture_output=True, text=True, timeout=30)
        assert missing.returncode != 0 and "haproxy_answers" in missing.stderr


def test_keepalived_refuses_an_interface_the_host_lacks(tmp_path: Path):
    keepalived = shutil.which("keepalived", path="/usr/sbin:/sbin:/usr/bin")
    config = _pair_config()
    path = tmp_path / "keepalived.conf"
    path.write_text(_as_on_the_host(render_keepalived_config(config, config.haproxy.hosts[0]), "nosuchif0"))
    result = subprocess.run([keepalived, "-t", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0


def test_binds_on_the_vip_work_on_the_backup_host(tmp_path: Path):
    config = _pair_config(frontends=[{"name": "http", "bind": ["203.0.113.100:80", ":8080"], "gatewayPort": "http"}])
    text = render_haproxy_config(config)
    assert "    bind 203.0.113.100:80 transparent\n" in text
    assert "    bind :8080\n" in text
    result = haproxy_check(text, tmp_path)
    assert result.returncode == 0, result.stderr


def test_metrics_listener_serves_the_prometheus_exporter_and_stats(tmp_path: Path):
    config = _pair_config(metrics={"bind": "127.0.0.1:8404"})
    text = render_haproxy_config(config)
    section = text[text.index("frontend metrics") :]
    assert "    mode http\n    bind 127.0.0.1:8404\n" in section
    assert "http-request use-service prometheus-exporter if { path /metrics }" in section
    assert "stats uri /stats" in section
    result = haproxy_check(text, tmp_path)
    assert result.returncode == 0 and "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_haproxy_here_has_the_prometheus_exporter_built_in():
    binary = shutil.which("haproxy", path="/usr/sbin:/usr/bin")
    assert binary, "haproxy is not installed: run `make setup`"
    assert "Prometheus exporter" in subprocess.run([binary, "-vv"], capture_output=True, text=True).stdout
