"""Property tests (hypothesis) over the whole configuration contract: every input either becomes a
configuration or is refused with one line that names a `source-ip-edge:` key, never another
exception; every accepted configuration renders a haproxy.cfg that `haproxy -c` accepts.

Bounded in `make unit` (FUZZ_EXAMPLES, 50 by default, derandomized so that a run is repeatable);
`make fuzz` runs many more with fresh random inputs. The Kubernetes side (Istio's CRD schemas) is
tests/render/test_config_fuzz_objects.py.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pulumi
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from components.config import SECRET_KEYS, TOP_LEVEL_KEYS, ConfigError, parse_stack_config
from components.haproxy_host.access_list import render_edge_lists
from components.haproxy_host.haproxy_cfg import render_haproxy_config
from components.program import read_stack_config

from .config_strategies import any_input, from_schema, json_values, mutated, valid_configs
from .conftest import haproxy_check
from .program_harness import _Mocks

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the checkout
    derandomize=os.environ.get("FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
KNOWN_KEYS = set(TOP_LEVEL_KEYS) | set(SECRET_KEYS)
# `source-ip-edge:` then a key path (`access.allow[2]`, `haproxy.hosts[0].hostKey`), then `: problem`.
REFUSAL = re.compile(r"^source-ip-edge:(?P<key>[A-Za-z]+)(?:\.[A-Za-z]+|\[\d+\])*(?:\.\S+)?: \S")


def assert_names_a_key(message: str) -> None:
    assert "\n" not in message and "\r" not in message, f"more than one line: {message!r}"
    match = REFUSAL.match(message)
    assert match, f"does not start with a source-ip-edge: key path: {message!r}"
    # An unknown top-level key is named as the user wrote it.
    assert match["key"] in KNOWN_KEYS or message.endswith(": is not a known key"), f"names no known key: {message!r}"


@FUZZ
@given(raw=any_input())
def test_every_input_is_accepted_or_refused_with_one_line_naming_a_key(raw):
    try:
        parse_stack_config(raw)
    except ConfigError as error:
        event("refused")
        assert_names_a_key(str(error))
    else:
        event("accepted")


@FUZZ
@given(raw=st.one_of(valid_configs(), mutated(valid_configs()), from_schema()))
def test_every_accepted_config_renders_a_haproxy_cfg_that_haproxy_accepts(raw):
    # haproxy.extra is the escape hatch: raw lines the user writes, checked by `haproxy -c` on each
    # host before going live by design; every other key must render a valid file.
    if isinstance(raw.get("haproxy"), dict):
        raw["haproxy"].pop("extra", None)
    try:
        config = parse_stack_config(raw)
    except ConfigError:
        event("refused")
        return
    event("accepted")
    text = render_haproxy_config(config)
    with tempfile.TemporaryDirectory() as folder:
        result = haproxy_check(text, Path(folder), render_edge_lists(config.access))
    assert result.returncode == 0, f"haproxy -c refused:\n{result.stdout}{result.stderr}\n{text}"


# What the program gets from Pulumi: every value a string (objects as JSON), under any key.
_stack_values = st.one_of(json_values.map(lambda v: __import__("json").dumps(v)), st.text(max_size=30))
_stack_keys = st.one_of(
    st.sampled_from(sorted(KNOWN_KEYS)), st.from_regex(r"[a-zA-Z][a-zA-Z0-9.]{0,12}", fullmatch=True)
)


@FUZZ
@given(values=st.dictionaries(_stack_keys, _stack_values, max_size=5), base=valid_configs())
def test_the_program_refuses_any_stack_value_with_one_line_naming_a_key(values, base):
    import json

    config = {f"source-ip-edge:{key}": json.dumps(value) for key, value in base.items()}
    config["source-ip-edge:sshPrivateKey"] = "placeholder"
    config.update({f"source-ip-edge:{key}": value for key, value in values.items()})
    pulumi.runtime.set_all_config(config, ["source-ip-edge:sshPrivateKey"])
    pulumi.runtime.set_mocks(_Mocks(), project="source-ip-edge", stack="fuzz", preview=False)
    try:
        read_stack_config()
    except pulumi.RunError as error:
        event("refused")
        message = str(error)
        assert "\n" not in message, f"more than one line: {message!r}"
        assert re.match(r"^source-ip-edge:[A-Za-z]", message) or re.search(r"'source-ip-edge:[A-Za-z]", message), (
            f"names no source-ip-edge: key: {message!r}"
        )
    else:
        event("accepted")
