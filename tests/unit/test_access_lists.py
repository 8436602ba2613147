"""The access lists: read from files, enforced where the stack says, split across AuthorizationPolicies
when long, and rendered for the edge as files haproxy.cfg names."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from components.config import MAX_POLICY_CIDR_BYTES, ConfigError, parse_stack_config
from components.haproxy_host.access_list import render_edge_lists
from components.haproxy_host.haproxy_cfg import render_haproxy_config
from components.source_ip_policy.policies import authorization_policies, shard_networks

from .conftest import haproxy_check, valid_raw


def _config(tmp_path: Path, **access):
    raw = valid_raw()
    raw["access"] = access
    return parse_stack_config(raw, project_dir=tmp_path)


def _spread(count: int, start: int = 0) -> list[str]:
    """`count` /32s two addresses apart (nothing merges), from 10.0.0.0 on."""
    return [
        f"{ipaddress.ip_address(int(ipaddress.ip_address('10.0.0.0')) + 2 * i)}/32" for i in range(start, start + count)
    ]


# --- lists from files --------------------------------------------------------------------------------


def test_a_list_file_adds_its_networks_with_comments_and_blank_lines_skipped(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "deny.txt").write_text(
        "# an abuse feed\n198.51.100.0/24\n\n  2001:db8::/32   # v6 too\n198.51.100.0/24\n192.0.2.7/32\n"
    )
    config = _config(tmp_path, deny=["192.0.2.7/32"], denyFrom=["lists/deny.txt"])
    assert config.access.deny_blocks == ("192.0.2.7/32", "198.51.100.0/24", "2001:db8::/32")
    assert [str(n) for n in config.access.deny] == ["192.0.2.7/32"], "the stack file's own entries"
    assert config.access.count("deny") == 1 + 3, "each file network once"
    assert config.access.deny_files[0].path == "lists/deny.txt" and config.access.deny_files[0].entries == 4


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("192.0.2.0/24\nnot-a-network\n", "lists/x.txt:2: 'not-a-network' is not a CIDR"),
        ("# ok\n\n192.0.2.1/24\n", "lists/x.txt:3: '192.0.2.1/24' has host bits set; did you mean 192.0.2.0/24?"),
        ("10.0.0.0/33\n", "lists/x.txt:1: '10.0.0.0/33' is not a CIDR"),
    ],
)
def test_a_bad_line_is_refused_naming_the_key_file_and_line(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "x.txt").write_text(content)
    with pytest.raises(ConfigError) as error:
        _config(tmp_path, allowFrom=["lists/x.txt"])
    assert str(error.value) == f"source-ip-edge:access.allowFrom[0]: {problem}"


def test_missing_unreadable_and_repeated_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^source-ip-edge:access.denyFrom\[0\]: 'nope.txt': no such file"):
        _config(tmp_path, denyFrom=["nope.txt"])
    with pytest.raises(ConfigError, match=r"^source-ip-edge:access.denyFrom\[0\]: '.' is a directory"):
        _config(tmp_path, denyFrom=["."])
    (tmp_path / "a.txt").write_bytes(b"192.0.2.0/24\n\xff\n")
    with pytest.raises(ConfigError, match=r"^source-ip-edge:access.denyFrom\[0\]: 'a.txt' is not UTF-8"):
        _config(tmp_path, denyFrom=["a.txt"])
    (tmp_path / "a.txt").write_text("192.0.2.0/24\n")
    with pytest.raises(
        ConfigError, match=r"^source-ip-edge:access.denyFrom\[1\]: './a.txt' is already listed at \[0\]"
    ):
        _config(tmp_path, denyFrom=["a.txt", "./a.txt"])


def test_enforcement_points_default_to_the_gateway_and_are_checked(tmp_path: Path) -> None:
    config = _config(tmp_path, allow=["192.0.2.0/24"])
    assert (config.access.allow_at, config.access.deny_at) == ("gateway", "gateway")
    with pytest.raises(ConfigError, match=r"^source-ip-edge:access.denyAt: "):
        _config(tmp_path, denyAt="haproxy")


# --- where each list is enforced ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "edge", "gateway"), [("edge", True, False), ("gateway", False, True), ("both", True, True)]
)
def test_each_list_is_enforced_where_the_stack_says(tmp_path: Path, at: str, edge: bool, gateway: bool) -> None:
    config = _config(tmp_path, allow=["198.51.100.0/24"], deny=["192.0.2.0/24"], allowAt=at, denyAt=at)
    cfg = render_haproxy_config(config)
    assert ("tcp-request connection reject if { src -f /etc/haproxy/source-ip-edge-deny.acl }" in cfg) is edge
    assert ("tcp-request connection reject if !{ src -f /etc/haproxy/source-ip-edge-allow.acl }" in cfg) is edge
    assert [e.which for e in render_edge_lists(config.access)] == (["deny", "allow"] if edge else [])
    names = [p["metadata"]["name"] for p in authorization_policies(config)]
    assert names == (["istio-ingressgateway-source-ip-deny", "istio-ingressgateway-source-ip-allow"] if gateway else [])


def test_the_edge_rules_come_before_any_byte_is_forwarded_and_the_config_names_files_not_networks(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, deny=["192.0.2.0/24"], denyAt="edge")
    cfg = render_haproxy_config(config)
    frontend = cfg[cfg.index("frontend http\n") :].split("\n\n")[0]
    assert frontend.index("tcp-request connection reject") < frontend.index("default_backend")
    assert "192.0.2.0" not in cfg
    other = render_haproxy_config(_config(tmp_path, deny=["192.0.2.0/25"], denyAt="edge"))
    assert other == cfg, "a list change leaves haproxy.cfg as it is: no reload"
    assert "tcp-request" not in render_haproxy_config(_config(tmp_path, denyAt="edge")), "an empty list, no rule"


def test_the_edge_list_file_is_merged_and_loads_in_haproxy(tmp_path: Path) -> None:
    config = _config(
        tmp_path, deny=["192.0.2.0/25", "192.0.2.128/25", "2001:db8::/33", "2001:db8:8000::/33"], denyAt="edge"
    )
    (deny,) = render_edge_lists(config.access)
    assert deny.text.splitlines()[2:] == ["192.0.2.0/24", "2001:db8::/32"] and deny.entries == 2
    assert deny.text.startswith("# Managed by source-ip-edge")
    assert "4 networks (4 in access.deny); 2 after merging" in deny.summary and deny.sha256 in deny.summary
    listed = tmp_path / "deny.acl"
    listed.write_text(deny.text)
    cfg = render_haproxy_config(config).replace(deny.path, str(listed))
    result = haproxy_check(cfg, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the gateway: long lists over several policies -----------------------------------------------


def test_a_list_that_fits_keeps_its_single_policy_and_name(tmp_path: Path) -> None:
    config = _config(tmp_path, deny=_spread(1000))
    (policy,) = authorization_policies(config)
    assert policy["metadata"]["name"] == "istio-ingressgateway-source-ip-deny"


def test_a_long_list_is_split_into_policies_within_the_limit_that_together_hold_it(tmp_path: Path) -> None:
    (tmp_path / "deny.txt").write_text("\n".join(_spread(150_000)) + "\n")
    (tmp_path / "allow.txt").write_text("\n".join(_spread(80_000, start=200_000)) + "\n")
    config = _config(tmp_path, denyFrom=["deny.txt"], allowFrom=["allow.txt"], denyAt="gateway", allowAt="gateway")
    policies = authorization_policies(config)
    by_action: dict[str, list[str]] = {"DENY": [], "ALLOW": []}
    for policy in policies:
        blocks = policy["spec"]["rules"][0]["from"][0]["source"]["remoteIpBlocks"]
        assert blocks, "no policy without networks (an empty remoteIpBlocks is no condition)"
        assert sum(len(b) + 3 for b in blocks) <= MAX_POLICY_CIDR_BYTES
        assert len(json.dumps(policy)) < 1_572_864, "within etcd's request limit"
        by_action[policy["spec"]["action"]] += blocks
    assert sorted(by_action["DENY"]) == sorted(map(str, config.access.deny_blocks))
    assert sorted(by_action["ALLOW"]) == sorted(map(str, config.access.allow_blocks))
    names = [p["metadata"]["name"] for p in policies]
    assert len(set(names)) == len(names) and "istio-ingressgateway-source-ip-deny-8-0" in names


def test_a_one_network_change_in_a_long_list_changes_one_policy() -> None:
    networks = _spread(150_000)
    before = shard_networks(networks)
    assert len(before) == 8
    changed = networks[:77] + networks[78:] + ["192.0.2.7/32"]
    after = shard_networks(sorted(changed, key=lambda n: ipaddress.ip_network(n)))
    assert len(after) == len(before)
    differing = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert 1 <= len(differing) <= 2, differing


def test_merging_gives_what_the_standard_library_gives(tmp_path: Path) -> None:
    import random

    from components.config import collapse_packed, pack_network

    rng = random.Random(5)
    for _ in range(200):
        networks = set()
        for _ in range(rng.randrange(1, 60)):
            if rng.random() < 0.5:
                prefix = rng.randrange(20, 33)
                networks.add(
                    ipaddress.ip_network((rng.randrange(2**12) << 20 | rng.randrange(2**20), prefix), strict=False)
                )
            else:
                prefix = rng.randrange(116, 129)
                networks.add(
                    ipaddress.ip_network(
                        (2**125 | rng.randrange(2**16) << 112 | rng.randrange(2**14), prefix), strict=False
                    )
                )
        want = [str(n) for v in (4, 6) for n in ipaddress.collapse_addresses(x for x in networks if x.version == v)]
        assert list(collapse_packed(map(pack_network, networks))) == want
    assert collapse_packed([(4, 0, 0)]) == ("0.0.0.0/0",) and collapse_packed([(6, 0, 0)]) == ("::/0",)


@pytest.mark.parametrize(
    "line", ["010.0.0.0/8", "1.2.3.256/32", "1.2.3.4/33", "1.2.3.4/024", "1.2.3", " ", "1.2.3.4/-1"]
)
def test_the_fast_ipv4_path_accepts_exactly_what_ipaddress_does(tmp_path: Path, line: str) -> None:
    (tmp_path / "x.txt").write_text(f"{line}\n")
    try:
        want = [str(ipaddress.ip_network(line.strip(), strict=True))] if line.strip() else []
    except ValueError:
        want = None
    if want is None:
        with pytest.raises(ConfigError, match=r"x.txt:1: "):
            _config(tmp_path, denyFrom=["x.txt"])
    else:
        assert list(_config(tmp_path, denyFrom=["x.txt"]).access.deny_blocks) == want
