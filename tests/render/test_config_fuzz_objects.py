"""Property test (hypothesis): every configuration the program accepts renders, through the offline
render tool, Istio objects that Istio's own CRD schemas accept (read strictly, test_istio_schema.py).

Bounded like tests/unit/test_config_fuzz.py: FUZZ_EXAMPLES (50 by default, derandomized); `make fuzz`
runs more with fresh random inputs.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import jsonschema
import yaml
from hypothesis import event, given

from components.config import ConfigError, parse_stack_config
from components.render import render
from tests.unit.config_strategies import mutated, valid_configs
from tests.unit.test_config_fuzz import FUZZ

from .conftest import ROOT
from .test_istio_schema import _istio_objects, crd_schemas  # noqa: F401  (crd_schemas: a fixture)


@FUZZ
@given(raw=valid_configs() | mutated(valid_configs()))
def test_every_accepted_config_renders_istio_objects_that_istio_crds_accept(raw, crd_schemas):  # noqa: F811
    try:
        parse_stack_config(raw)
    except ConfigError:
        event("refused")
        return
    event("accepted")
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        shutil.copy(ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
        config = {f"source-ip-edge:{key}": value for key, value in raw.items()}
        config["source-ip-edge:sshPrivateKey"] = {"secure": "v1:fuzz"}  # replaced by a placeholder
        (project / "Pulumi.fuzz.yaml").write_text(yaml.safe_dump({"config": config}))
        render("fuzz", project / "out", project)
        objects = list(_istio_objects(project / "out"))
    for name, obj in objects:
        schema = crd_schemas.get((obj["apiVersion"], obj["kind"]))
        assert schema is not None, f"{name}: {obj['apiVersion']} {obj['kind']} is not a served Istio CRD version"
        jsonschema.validate({"spec": obj["spec"]}, {**schema, "required": ["spec"]})
