"""tf-agent's JSON (jsonio.py, on `_json` without the `json` package) against `json`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiagent import jsonio

ROOT = Path(__file__).resolve().parents[2]

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_same_text_and_values_as_json(value):
    text = jsonio.dumps(value)
    assert text == json.dumps(value)
    assert jsonio.loads(text) == json.loads(text)
    assert jsonio.loads(text.encode()) == value


@given(st.text(max_size=30) | st.sampled_from(['{"a": 1} x', "[1,]", '"abc', "", " ", "nul"]))
def test_bad_text_is_a_value_error_where_json_says_so(text):
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            jsonio.loads(text)
    else:
        got = jsonio.loads(text)
        assert got == expected or (isinstance(got, float) and math.isnan(got))


def test_nan_and_infinity_as_json_writes_them():
    assert jsonio.dumps([float("inf"), float("-inf")]) == "[Infinity, -Infinity]"
    assert math.isnan(jsonio.loads("NaN"))


def test_not_serializable_is_a_type_error():
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        jsonio.dumps({"a": {1}})
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        jsonio.dumps(loop)


def test_a_malformed_string_is_a_value_error_before_json_is_loaded():
    """`_json` raises its errors through json.decoder, which it does not import itself."""
    code = (
        "import sys; from multiagent import jsonio\n"
        "assert 'json' not in sys.modules\n"
        "try:\n    jsonio.loads('\"abc')\nexcept ValueError as e:\n    print(type(e).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n{code}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.strip() == "JSONDecodeError", out.stderr


def test_the_idle_agent_loads_neither_json_nor_re_nor_logging():
    """What each start of hundreds of agents pays for: none of these at idle."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "import multiagent.agent.main, multiagent.agent.loop\n"
        "print(sorted(m for m in ('json', 're', 'enum', 'logging', 'socket', 'signal', "
        "'threading', 'typing', 'multiagent.agent.record', 'multiagent.agent.procs', "
        "'multiagent.agent.memory', 'multiagent.agent.job') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=30
    )
    assert out.stdout.strip() == "[]", out.stderr
