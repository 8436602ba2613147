"""An HA pair under Pulumi mocks: keepalived per host, the VRRP password only ever a secret, the
order of apply and destroy, and the VIP and metrics in the stack outputs."""

from __future__ import annotations

import json

import pulumi
import pytest

from .conftest import valid_raw
from .program_harness import run_program, unwrap_secret

COMMAND = "command:remote:Command"
PASSWORD = "Vr-9x.7q"


def _ha_raw() -> dict:
    raw = valid_raw()
    raw["haproxy"]["hosts"].append(dict(raw["haproxy"]["hosts"][0], name="edge-2", address="203.0.113.11"))
    raw["haproxy"]["vip"] = {"address": "203.0.113.100/24", "virtualRouterId": 51}
    raw["haproxy"]["metrics"] = {"bind": "127.0.0.1:8404"}
    return raw


@pytest.fixture(scope="module")
def ha_run():
    return run_program(_ha_raw(), secrets={"vrrpPassword": PASSWORD})


def test_each_host_gets_keepalived_after_its_haproxy_config(ha_run):
    for host in ("edge-1", "edge-2"):
        install = ha_run.one(COMMAND, f"-{host}-install")
        config = ha_run.one(COMMAND, f"-{host}-config")
        keepalived = ha_run.one(COMMAND, f"-{host}-keepalived")
        # Created after, so destroyed before: the VIP leaves before haproxy.cfg is restored.
        assert {install.urn, config.urn} <= set(keepalived.dependencies)
        assert keepalived.delete_before_replace
        assert "WITH_KEEPALIVED=yes\n" in install.inputs["create"]
        assert "keepalived_apply.sh" in keepalived.inputs["create"]
        assert "keepalived_restore.sh" in keepalived.inputs["delete"]


def test_vrrp_password_is_a_secret_stdin_and_in_no_command_text(ha_run):
    for host in ("edge-1", "edge-2"):
        keepalived = ha_run.one(COMMAND, f"-{host}-keepalived")
        is_secret, value = unwrap_secret(keepalived.inputs["stdin"])
        assert is_secret and value == f"{PASSWORD}\n"
        for field in ("create", "delete"):
            assert not unwrap_secret(keepalived.inputs[field])[0], "the command text stays readable in a diff"
            assert PASSWORD not in keepalived.inputs[field]
    every_plain_input = json.dumps(
        [{k: v for k, v in r.inputs.items() if k != "stdin"} for r in ha_run.registrations], default=str
    )
    assert PASSWORD not in every_plain_input
    assert PASSWORD not in json.dumps(ha_run.outputs, default=str)


def test_hosts_differ_only_in_their_keepalived_priority(ha_run):
    first = ha_run.one(COMMAND, "-edge-1-keepalived").inputs["create"]
    second = ha_run.one(COMMAND, "-edge-2-keepalived").inputs["create"]
    assert "priority 150" in first and "priority 140" in second
    assert "VIP_NETWORK=203.0.113.0/24\n" in first and "VIP_INTERFACE=''\n" in first


def test_outputs_carry_the_vip_and_the_metrics_targets(ha_run):
    assert ha_run.outputs["vip"] == {
        "address": "203.0.113.100",
        "prefixLength": 24,
        "virtualRouterId": 51,
        "priorities": {"edge-1": 150, "edge-2": 140},
    }
    metrics = ha_run.outputs["metrics"]
    assert metrics["bind"] == "127.0.0.1:8404" and metrics["metricsPath"] == "/metrics"
    assert [t["host"] for t in metrics["targets"]] == ["edge-1", "edge-2"]


def test_without_a_vip_there_is_no_keepalived_and_no_vip_output():
    run = run_program(valid_raw())
    assert not [r for r in run.all(COMMAND) if r.name.endswith("-keepalived")]
    assert "WITH_KEEPALIVED=yes" not in run.one(COMMAND, "-edge-1-install").inputs["create"]
    assert run.outputs["vip"] is None and run.outputs["metrics"] is None


def test_a_vrrp_password_not_set_as_a_secret_is_refused_naming_the_key():
    # Pulumi.yaml cannot declare vrrpPassword (optional, no default), so Pulumi itself would not
    # insist on it being encrypted in the stack file: the program does.
    raw = dict(_ha_raw(), vrrpPassword=PASSWORD)  # a plain `pulumi config set vrrpPassword ...`
    with pytest.raises(pulumi.RunError, match=r"^source-ip-edge:vrrpPassword: must be a secret"):
        run_program(raw)
