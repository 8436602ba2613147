"""The haproxy.cfg renderer: structure, determinism, and HAProxy's own check on the result."""

from __future__ import annotations

import re

import pytest

from components.haproxy_host.haproxy_cfg import (
    ISTIO_DEFAULT_TERMINATION_DRAIN_S,
    config_identity,
    config_sha256,
    drain_detection_bound_s,
    render_haproxy_config,
)
from tests.unit.conftest import haproxy_check, make_config


def _section(text: str, header: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(header)
    body = []
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        body.append(line.strip())
    return body


def test_default_config_passes_haproxy_check(tmp_path):
    result = haproxy_check(render_haproxy_config(make_config()), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_global_has_admin_socket_that_hands_over_listeners():
    glob = _section(render_haproxy_config(make_config()), "global")
    assert "stats socket /run/haproxy/admin.sock mode 600 level admin expose-fd listeners" in glob
    assert "hard-stop-after 1h" in glob
    assert "chroot /var/lib/haproxy" in glob and "user haproxy" in glob and "group haproxy" in glob
    assert "maxconn 4000" in glob
    assert any(line.startswith("log ") for line in glob)


def test_defaults_are_tcp_with_tunnel_and_client_fin_timeouts():
    defaults = _section(render_haproxy_config(make_config()), "defaults")
    assert "mode tcp" in defaults and "option tcplog" in defaults
    for expected in (
        "timeout connect 5s",
        "timeout client 50s",
        "timeout server 50s",
        "timeout tunnel 1h",
        "timeout client-fin 30s",
    ):
        assert expected in defaults


def test_frontends_bind_80_and_443_by_default_and_ipv6_binds_are_v6only(tmp_path):
    text = render_haproxy_config(make_config())
    assert _section(text, "frontend http") == ["bind :80", "default_backend gateway_http"]
    assert _section(text, "frontend https") == ["bind :443", "default_backend gateway_https"]
    config = make_config(
        lambda r: r["haproxy"].update(
            frontends=[{"name": "https", "bind": [":443", "[::]:443"], "gatewayPort": "https"}]
        )
    )
    text = render_haproxy_config(config)
    assert _section(text, "frontend https")[:2] == ["bind :443", "bind [::]:443 v6only"]
    assert haproxy_check(text, tmp_path).returncode == 0


def test_header_says_local_edits_are_overwritten_by_the_next_applied_change():
    header = render_haproxy_config(make_config()).split("\nglobal\n")[0]
    one_line = " ".join(line.lstrip("# ") for line in header.splitlines())
    assert "Managed by source-ip-edge (Pulumi)" in one_line
    assert "local edits are overwritten by the next change that `pulumi up` applies, and are not kept" in one_line
    assert "change the stack's configuration instead" in one_line
    # A host is written only when its inputs change, so an edit is not replaced on every `pulumi up`.
    assert "replaced on the next `pulumi up`" not in one_line


def test_health_check_speaks_http11_with_a_host_and_expects_200(tmp_path):
    text = render_haproxy_config(make_config())
    for backend in ("backend gateway_http", "backend gateway_https"):
        lines = _section(text, backend)
        # HTTP/1.0 (what `option httpchk GET /path` sends) gets 426 from Envoy's status listener.
        assert "option httpchk" in lines
        assert not any(re.match(r"option httpchk \S", line) for line in lines)
        assert "http-check send meth GET uri /healthz/ready ver HTTP/1.1 hdr Host source-ip-edge-health-check" in lines
        assert "http-check expect status 200" in lines
    assert haproxy_check(text, tmp_path).returncode == 0


def test_backend_sends_proxy_v2_to_every_node_and_checks_the_status_port():
    text = render_haproxy_config(make_config())
    https = _section(text, "backend gateway_https")
    default_server = next(line for line in https if line.startswith("default-server"))
    assert "send-proxy-v2" in default_server.split() and "port 30021" in default_server
    # No PROXY header on the check: with `port` HAProxy sends one only with check-send-proxy.
    assert "check-send-proxy" not in text
    assert [line for line in https if line.startswith("server ")] == [
        "server node-192.0.2.50 192.0.2.50:30443",
        "server node-192.0.2.51 192.0.2.51:30443",
    ]


def test_proxy_protocol_v1_when_configured(tmp_path):
    text = render_haproxy_config(make_config(lambda r: r["haproxy"].update(proxyProtocolVersion=1)))
    assert re.search(r"default-server .* send-proxy$", text, re.M)
    assert "send-proxy-v2" not in text
    assert haproxy_check(text, tmp_path).returncode == 0


def test_ipv6_gateway_node_is_bracketed(tmp_path):
    text = render_haproxy_config(make_config(lambda r: r["gateway"].update(nodes=["2001:db8::50"])))
    assert "server node-2001:db8::50 [2001:db8::50]:30080" in text
    assert haproxy_check(text, tmp_path).returncode == 0


def test_load_balancer_backend_uses_service_ports():
    config = make_config(lambda r: r["gateway"].update(serviceType="LoadBalancer", nodes=["192.0.2.99"]))
    text = render_haproxy_config(config)
    assert "server node-192.0.2.99 192.0.2.99:443" in text and "port 15021" in text


def test_adding_a_node_changes_only_server_lines():
    before = render_haproxy_config(make_config()).splitlines()
    after = render_haproxy_config(make_config(lambda r: r["gateway"]["nodes"].append("192.0.2.52"))).splitlines()
    added = [line for line in after if line not in before]
    # The identity line carries the hash of everything else, so it changes with any change.
    assert added[0].startswith("    description source-ip-edge sha256=")
    assert added[1:] == ["    server node-192.0.2.52 192.0.2.52:30080", "    server node-192.0.2.52 192.0.2.52:30443"]
    assert [line for line in before if line not in after] == [before[before.index("global") + 1]]


def test_identity_line_is_the_hash_of_the_rest_of_the_file():
    text = render_haproxy_config(make_config())
    lines = text.splitlines(keepends=True)
    identity = lines.pop(lines.index("global\n") + 1)
    assert identity == f"    description {config_identity(''.join(lines))}\n"


def test_extra_lines_land_in_their_section_and_are_checked_by_haproxy(tmp_path):
    config = make_config(
        lambda r: r["haproxy"].update(extra={"global": ["nbthread 2"], "defaults": ["option redispatch"]})
    )
    text = render_haproxy_config(config)
    assert "nbthread 2" in _section(text, "global")
    assert "option redispatch" in _section(text, "defaults")
    assert haproxy_check(text, tmp_path).returncode == 0
    bad = make_config(lambda r: r["haproxy"].update(extra={"global": ["no-such-directive 1"]}))
    result = haproxy_check(render_haproxy_config(bad), tmp_path)
    assert result.returncode != 0


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn", "source", "first", "static-rr"])
def test_every_balance_algorithm_passes_haproxy_check(balance, tmp_path):
    text = render_haproxy_config(make_config(lambda r: r["haproxy"].update(balance=balance)))
    assert f"balance {balance}" in text
    assert haproxy_check(text, tmp_path).returncode == 0


def test_rendering_is_deterministic_and_hash_follows_content():
    first, second = render_haproxy_config(make_config()), render_haproxy_config(make_config())
    assert first == second
    changed = render_haproxy_config(make_config(lambda r: r["haproxy"].update(balance="leastconn")))
    assert config_sha256(first) == config_sha256(second) != config_sha256(changed)


def _check_settings(text: str, backend: str) -> dict[str, str]:
    default_server = next(line for line in _section(text, backend) if line.startswith("default-server")).split()
    keywords = ("inter", "fastinter", "fall", "rise", "slowstart")
    return {word: default_server[i + 1] for i, word in enumerate(default_server) if word in keywords}


def _seconds(duration: str) -> float:
    return float(duration[:-2]) / 1000 if duration.endswith("ms") else float(duration.rstrip("s"))


def test_a_draining_node_is_down_before_istio_stops_it_serving():
    # From the first 503 of a drain: the next check is at most `inter` away, the fall - 1 after it
    # `fastinter` apart. All of it inside Istio's default terminationDrainDuration, with a second to spare.
    text = render_haproxy_config(make_config())
    for backend in ("backend gateway_http", "backend gateway_https"):
        settings = _check_settings(text, backend)
        assert settings == {"inter": "2s", "fastinter": "500ms", "fall": "2", "rise": "2", "slowstart": "5s"}
        bound = _seconds(settings["inter"]) + (int(settings["fall"]) - 1) * _seconds(settings["fastinter"])
        assert bound == drain_detection_bound_s() == 2.5
        assert bound + 1 <= ISTIO_DEFAULT_TERMINATION_DRAIN_S
        # One 503 (a check that met a surge roll's old pod) does not take the node out.
        assert int(settings["fall"]) >= 2


def test_marking_a_node_down_leaves_its_sessions_to_the_drain():
    # shutdown-sessions would cut requests in flight that the draining gateway would still finish.
    text = render_haproxy_config(make_config())
    assert "on-marked-down" not in text and "shutdown-sessions" not in text
