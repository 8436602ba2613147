"""Pulumi.yaml declares every key of the contract, with the program's own defaults (its config
block is generated from the schema: test_config_docs.py)."""

from __future__ import annotations

import yaml

from components.config import SECRET_KEYS, TOP_LEVEL_KEYS, parse_stack_config

from .conftest import ROOT, valid_raw


def _project():
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())


def test_project_is_python_with_a_virtualenv():
    project = _project()
    assert project["name"] == "source-ip-edge"
    assert project["runtime"]["name"] == "python"
    assert project["runtime"]["options"]["virtualenv"] == ".venv"


def test_every_key_is_declared_with_type_and_description():
    declared = _project()["config"]
    # vrrpPassword is optional with no default: declared, Pulumi would require it of every stack.
    assert set(declared) == (set(TOP_LEVEL_KEYS) | set(SECRET_KEYS)) - {"vrrpPassword"}
    for key, declaration in declared.items():
        assert declaration["type"] in ("object", "string"), key
        assert len(declaration["description"]) > 20, key
    assert declared["sshPrivateKey"]["secret"] is True


def test_declared_defaults_equal_the_programs_defaults():
    declared = _project()["config"]
    raw = valid_raw()
    for key in ("istio", "proxyProtocol", "access", "kubernetes"):
        raw.pop(key, None)
    from_program = parse_stack_config(raw)
    raw.update({key: declared[key]["default"] for key in ("istio", "proxyProtocol", "access", "kubernetes")})
    from_pulumi_yaml = parse_stack_config(raw)
    assert from_program == from_pulumi_yaml
    assert declared["istio"]["default"]["version"] == from_program.istio.version
    assert declared["istio"]["default"]["chartRepository"] == from_program.istio.chart_repository


def test_no_declared_key_is_required_unless_the_program_requires_it():
    # Pulumi refuses a stack that lacks a declared key without a default ("Stack ... is missing
    # configuration value"): a stack without haproxy.vip has no vrrpPassword, and must run.
    declared = _project()["config"]
    required_by_pulumi = {key for key, declaration in declared.items() if "default" not in declaration}
    assert required_by_pulumi == {"haproxy", "sshPrivateKey", "gateway"}
