"""Every rendered Istio object validates against Istio's own CRD schema (openAPIV3Schema), read
strictly: a field the CRD does not define is an error here, although the API server would only
prune it silently (which is how a typo like `remoteIPBlocks` turns a policy into allow-all)."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from .conftest import STACKS

ISTIO_GROUPS = ("networking.istio.io", "security.istio.io")


@pytest.fixture(scope="session")
def crd_schemas(istio_module_dir: Path) -> dict[tuple[str, str], dict]:
    crds = yaml.safe_load_all((istio_module_dir / "manifests/charts/base/files/crd-all.gen.yaml").read_text())
    schemas = {}
    for crd in crds:
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schemas[(f"{group}/{version['name']}", kind)] = _strict(version["schema"]["openAPIV3Schema"])
    return schemas


def _strict(schema: dict) -> dict:
    """Kubernetes structural schema -> JSON Schema that refuses unknown fields."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node.setdefault("additionalProperties", False)
            if node.pop("x-kubernetes-int-or-string", False):
                node.pop("type", None)
                node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            if node.get("nullable"):
                node.pop("nullable")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    return schema


def _istio_objects(render_dir: Path):
    for path in sorted((render_dir / "kubernetes").glob("*.yaml")):
        obj = yaml.safe_load(path.read_text())
        if obj["apiVersion"].split("/")[0] in ISTIO_GROUPS:
            yield path.name, obj


@pytest.mark.parametrize("stack", STACKS)
def test_rendered_istio_objects_match_istio_crds(stack, rendered, crd_schemas):
    objects = list(_istio_objects(rendered[stack]))
    assert objects, f"stack {stack} rendered no Istio objects"
    for name, obj in objects:
        schema = crd_schemas.get((obj["apiVersion"], obj["kind"]))
        assert schema is not None, f"{name}: {obj['apiVersion']} {obj['kind']} is not a served Istio CRD version"
        jsonschema.validate({"spec": obj["spec"]}, {**schema, "required": ["spec"]})


def test_strict_schema_catches_a_misspelt_field(crd_schemas):
    schema = crd_schemas[("security.istio.io/v1", "AuthorizationPolicy")]
    typo = {"spec": {"action": "DENY", "rules": [{"from": [{"source": {"remoteIPBlocks": ["192.0.2.0/24"]}}]}]}}
    with pytest.raises(jsonschema.ValidationError, match="remoteIPBlocks"):
        jsonschema.validate(typo, schema)
