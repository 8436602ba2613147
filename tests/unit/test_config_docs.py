"""The schema is the one source of defaults and descriptions: Pulumi.yaml and the README follow it."""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from components.config import load_schema, parse_stack_config
from hack.tools import config_docs

from .conftest import HOST_KEY, ROOT


def _walk(node: Mapping[str, Any], path: str = ""):
    for name, child in node.get("properties", {}).items():
        key = f"{path}.{name}" if path else name
        yield key, child
        yield from _walk(child, key)
        yield from _walk(child.get("items", {}), f"{key}[]")


def _with_every_default(raw: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` with every key the schema has a default for written out, at every depth."""
    filled = dict(raw)
    for name, child in node.get("properties", {}).items():
        if name not in filled and "default" in child:
            filled[name] = copy.deepcopy(child["default"])
        elif name not in filled and "properties" in child and not child.get("required"):
            filled[name] = {}  # an object with required keys of its own (haproxy.vip) exists only when written
        if name in filled and "properties" in child:
            filled[name] = _with_every_default(filled[name], child)
        if name in filled and "properties" in child.get("items", {}):
            filled[name] = [_with_every_default(item, child["items"]) for item in filled[name]]
    return filled


def test_pulumi_yaml_config_block_is_generated_from_the_schema():
    path = ROOT / "Pulumi.yaml"
    wanted = config_docs.generated_files(load_schema(), ROOT)[path]
    assert path.read_text() == wanted, "Pulumi.yaml's config block differs from the schema: run make config-docs"


def test_readme_configuration_table_is_generated_from_the_schema():
    path = ROOT / "README.md"
    wanted = config_docs.generated_files(load_schema(), ROOT)[path]
    assert path.read_text() == wanted, "README.md's configuration table differs from the schema: run make config-docs"


def test_every_key_in_the_schema_has_a_description():
    keys = list(_walk(load_schema()))
    assert len(keys) > 40
    for key, node in keys:
        assert len(node.get("description", "")) > 10, f"{key}: no description in config_schema.json"


def test_an_empty_config_gets_exactly_the_schemas_defaults():
    minimal = {
        "haproxy": {"hosts": [{"name": "edge-1", "address": "203.0.113.10", "hostKey": HOST_KEY}]},
        "gateway": {"nodes": ["192.0.2.50"]},
    }
    explicit = _with_every_default(minimal, load_schema())
    assert explicit["istio"]["version"] and explicit["haproxy"]["hosts"][0]["port"]
    assert parse_stack_config(minimal) == parse_stack_config(explicit)


def test_config_py_writes_no_default_of_its_own():
    source = (ROOT / "components" / "config.py").read_text()
    fallbacks = re.findall(r"raw\.get\(\s*\"[^\"]+\"\s*,[^)]*\)", source)
    assert not fallbacks, f"defaults belong in config_schema.json, not in config.py: {fallbacks}"


def test_every_key_has_a_row_in_the_readme_table():
    table = config_docs.readme_table(load_schema())
    for key in config_docs.documented_keys(load_schema()):
        assert f"| `{key.path}` |" in table
    assert "| `sshPrivateKey` | required, secret |" in table
    assert "| `haproxy.hosts[].port` | `22` |" in table


def test_pulumi_yaml_declares_each_top_level_key_with_the_schemas_default_object():
    schema = load_schema()
    declared = yaml.safe_load(config_docs.pulumi_config_block(schema))["config"]
    assert list(declared) == [key for key in schema["properties"] if key != "vrrpPassword"]
    assert declared["sshPrivateKey"]["secret"] is True
    assert "default" not in declared["haproxy"] and "default" not in declared["gateway"]
    assert declared["istio"]["default"]["version"] == schema["properties"]["istio"]["properties"]["version"]["default"]
    assert declared["kubernetes"]["default"] == {}


def test_a_key_added_to_the_schema_shows_up_in_both_generated_parts():
    schema = load_schema()
    schema["properties"]["proxyProtocol"]["properties"]["drainSeconds"] = {
        "description": "How long a mode switch waits | drains.",
        "type": "integer",
        "default": 30,
    }
    declared = yaml.safe_load(config_docs.pulumi_config_block(schema))["config"]
    assert declared["proxyProtocol"]["default"]["drainSeconds"] == 30
    assert "drainSeconds (default 30)" in declared["proxyProtocol"]["description"]
    table = config_docs.readme_table(schema)
    assert "| `proxyProtocol.drainSeconds` | `30` | How long a mode switch waits \\| drains. |" in table


def test_only_the_region_between_the_markers_is_replaced():
    text = "before\nBEGIN\nold\nEND\nafter\n"
    assert (
        config_docs.replace_region(text, "BEGIN", "END", "BEGIN\nnew\nEND\n", file="f")
        == "before\nBEGIN\nnew\nEND\nafter\n"
    )


@pytest.mark.parametrize("text", ["no markers\n", "END\nBEGIN\n", "BEGIN\nBEGIN\nEND\n"])
def test_missing_or_misplaced_markers_are_refused(text):
    with pytest.raises(config_docs.MarkerError, match="^f: expected one line"):
        config_docs.replace_region(text, "BEGIN", "END", "x\n", file="f")


def test_check_names_the_stale_file_and_a_run_rewrites_only_the_table(tmp_path, capsys):
    for name in ("Pulumi.yaml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    readme = tmp_path / "README.md"
    good = readme.read_text()
    readme.write_text(good.replace("| `haproxy.maxconn` | `4000` |", "| `haproxy.maxconn` | `5000` |"))
    assert config_docs.main(["--check", "--root", str(tmp_path)]) == 1
    assert "README.md differs" in capsys.readouterr().err
    assert config_docs.main(["--root", str(tmp_path)]) == 0
    assert readme.read_text() == good
    assert config_docs.main(["--check", "--root", str(tmp_path)]) == 0
