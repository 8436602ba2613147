"""haproxy.vip, vrrpPassword and haproxy.metrics: what is accepted, and each refusal naming its key."""

from __future__ import annotations

import ipaddress

import pytest

from components.config import ConfigError, parse_stack_config

from .conftest import valid_raw

PASSWORD = "s3cr3t-8"


def _pair(**vip) -> dict:
    raw = valid_raw()
    raw["haproxy"]["hosts"].append(dict(raw["haproxy"]["hosts"][0], name="edge-2", address="203.0.113.11"))
    raw["haproxy"]["vip"] = {"address": "203.0.113.100/24", "virtualRouterId": 51, **vip}
    return raw


def _refused(raw, key: str, fragment: str, password: str | None = PASSWORD) -> str:
    with pytest.raises(ConfigError) as error:
        parse_stack_config(raw, vrrp_password=password)
    message = str(error.value)
    assert message.startswith(f"source-ip-edge:{key}: "), message
    assert fragment in message, message
    assert "\n" not in message
    return message


def test_no_vip_and_no_metrics_by_default():
    config = parse_stack_config(valid_raw())
    assert config.haproxy.vip is None and config.haproxy.metrics is None


def test_vip_is_parsed_with_priorities_in_host_order():
    vip = parse_stack_config(_pair(), vrrp_password=PASSWORD).haproxy.vip
    assert vip.address == ipaddress.ip_interface("203.0.113.100/24")
    assert vip.virtual_router_id == 51 and vip.interface is None
    assert vip.priorities == {"edge-1": 150, "edge-2": 140}


def test_vip_with_one_host_is_refused():
    raw = _pair()
    raw["haproxy"]["hosts"].pop()
    _refused(raw, "haproxy.vip", "at least two haproxy.hosts")


def test_vip_outside_the_hosts_subnet_is_refused():
    _refused(_pair(address="198.51.100.100/24"), "haproxy.vip.address", "outside the subnet of haproxy.hosts[0]")


def test_vip_outside_the_ssh_subnet_is_accepted_when_ssh_uses_a_management_network():
    config = parse_stack_config(_pair(address="198.51.100.100/24", sshOverOtherNetwork=True), vrrp_password=PASSWORD)
    assert str(config.haproxy.vip.address.ip) == "198.51.100.100"


def test_vip_is_multicast_unless_unicast_is_asked_for():
    assert parse_stack_config(_pair(), vrrp_password=PASSWORD).haproxy.vip.unicast is False
    assert parse_stack_config(_pair(unicast=True), vrrp_password=PASSWORD).haproxy.vip.unicast is True


@pytest.mark.parametrize(
    "host_address, ssh_elsewhere, fragment",
    [
        ("edge-2.example.org", False, "needs IP addresses: haproxy.hosts[1].address is 'edge-2.example.org'"),
        ("2001:db8::11", False, "haproxy.hosts[1].address 2001:db8::11 is not an IPv4 address in the VIP's subnet"),
        ("203.0.113.11", True, "cannot be combined with haproxy.vip.sshOverOtherNetwork"),
    ],
)
def test_unicast_needs_the_hosts_ipv4_addresses_on_the_vip_subnet(host_address, ssh_elsewhere, fragment):
    raw = _pair(unicast=True, sshOverOtherNetwork=ssh_elsewhere)
    raw["haproxy"]["hosts"][1]["address"] = host_address
    _refused(raw, "haproxy.vip.unicast", fragment)


@pytest.mark.parametrize(
    "address, fragment",
    [
        ("203.0.113.100", "needs the prefix length"),
        ("not-an-ip/24", "is not an address with its prefix length"),
        ("203.0.113.10/24", "is haproxy.hosts[0]'s own address"),
        ("203.0.113.0/24", "network address"),
        ("203.0.113.255/24", "broadcast address"),
        ("2001:db8::100/64", "only IPv4"),
    ],
)
def test_bad_vip_addresses_are_refused(address, fragment):
    _refused(_pair(address=address), "haproxy.vip.address", fragment)


@pytest.mark.parametrize("router_id", [0, 256])
def test_virtual_router_id_out_of_range_is_refused(router_id):
    _refused(_pair(virtualRouterId=router_id), "haproxy.vip.virtualRouterId", "out of range")


def test_vip_needs_the_password_secret():
    _refused(_pair(), "vrrpPassword", "is required with haproxy.vip", password=None)


def test_password_without_a_vip_is_refused():
    _refused(valid_raw(), "vrrpPassword", "haproxy.vip is not", password=PASSWORD)


@pytest.mark.parametrize("password", ["123456789", "has space", "pa#ss", "pa$s", 'q"uote'])
def test_bad_passwords_are_refused_without_echoing_them(password):
    message = _refused(_pair(), "vrrpPassword", "1 to 8 characters", password=password)
    assert password not in message


def test_bind_on_one_hosts_own_address_is_refused_with_a_vip():
    raw = _pair()
    raw["haproxy"]["frontends"] = [{"name": "http", "bind": "203.0.113.11:80", "gatewayPort": "http"}]
    _refused(raw, "haproxy.frontends[0].bind", "haproxy.hosts[1]'s own address")


def test_bad_interface_name_is_refused():
    _refused(_pair(interface="eth0; rm -rf /"), "haproxy.vip.interface", "not a valid name")


def test_loopback_metrics_bind_is_accepted():
    raw = valid_raw()
    raw["haproxy"]["metrics"] = {"bind": "127.0.0.1:8404"}
    metrics = parse_stack_config(raw).haproxy.metrics
    assert metrics.bind.haproxy() == "127.0.0.1:8404" and metrics.metrics_path == "/metrics"


@pytest.mark.parametrize("bind", [":8404", "203.0.113.10:8404", "[::]:8404"])
def test_public_metrics_bind_is_refused_unless_allowed(bind):
    raw = valid_raw()
    raw["haproxy"]["metrics"] = {"bind": bind}
    _refused(raw, "haproxy.metrics.bind", "allowPublic: true", password=None)
    raw["haproxy"]["metrics"]["allowPublic"] = True
    assert parse_stack_config(raw).haproxy.metrics.bind.port == 8404


def test_metrics_bind_clashing_with_a_frontend_is_refused():
    raw = valid_raw()
    raw["haproxy"]["metrics"] = {"bind": "127.0.0.1:80"}
    _refused(raw, "haproxy.metrics.bind", "clashes with haproxy.frontends[0]", password=None)
