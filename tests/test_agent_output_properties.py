"""Property-based tests (hypothesis) of the host's parsers of what a device prints: whatever the bytes or the
JSON, the strict loader either returns a finite document or refuses with its own error; the schema check says
what is wrong or accepts; the one result reader, the status table and the CI judge never crash on a stored
document, however it is shaped. Deterministic (derandomized) so CI never sees a new example by chance."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeopt.bench.schema import schema_problem
from edgeopt.ci.judge import evaluate
from edgeopt.config.lab import Gates
from edgeopt.remote.agent_json import NonFinite, loads_strict
from edgeopt.report import result_row
from edgeopt.results.reader import (
    accuracy,
    agent_valid,
    cell_key,
    document_problem,
    energy_per_inference,
    invalid_reasons,
    is_emulated,
    latency_p50,
    samples,
    usable,
)

PROFILE = settings(max_examples=200, derandomize=True, deadline=None)

scalars = st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=True, allow_infinity=True) \
    | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=30)
KEYS = ["agent", "latency_ms", "p50", "p90", "samples", "count", "invalid_reasons", "valid", "parity", "artifact",
        "metrics", "accuracy", "energy", "energy_per_inference_j", "model", "sha256", "device", "emulated", "flags",
        "error", "kind", "message", "ci", "superseded", "target", "profile", "format", "transfer", "total"]
# documents shaped like result documents: the keys the readers look for, holding anything
shaped = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS), inner, max_size=6), max_leaves=40)


def finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(finite(v) for v in value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    return True


@PROFILE
@given(st.binary(max_size=300))
def test_strict_loader_on_any_bytes_returns_finite_json_or_refuses(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        doc = loads_strict(text)
    except NonFinite:
        return
    except ValueError:  # json.JSONDecodeError: not a JSON document
        return
    assert finite(doc)


@PROFILE
@given(json_values)
def test_strict_loader_refuses_exactly_the_non_finite_documents(value: Any) -> None:
    text = json.dumps(value)  # Python writes NaN/Infinity for non-finite floats
    if finite(value):
        assert loads_strict(text) == json.loads(text)
    else:
        try:
            loads_strict(text)
        except NonFinite:
            return
        raise AssertionError(f"accepted {text[:80]}")


@PROFILE
@given(shaped)
def test_schema_check_answers_for_any_document(doc: Any) -> None:
    problem = schema_problem(doc)
    assert problem is None or (isinstance(problem, str) and problem)


@PROFILE
@given(shaped)
def test_readers_table_and_judge_never_crash_on_a_stored_document(doc: Any) -> None:
    stored = doc if isinstance(doc, dict) else {"agent": doc}
    stored.setdefault("result_id", "r-1")
    problem = document_problem(stored)
    assert problem is None or isinstance(problem, str)
    for reader in (latency_p50, energy_per_inference, accuracy):
        value = reader(stored)
        assert value is None or (isinstance(value, float) and math.isfinite(value))
    assert all(isinstance(x, float) for x in samples(stored))
    assert all(isinstance(r, str) for r in invalid_reasons(stored))
    assert isinstance(agent_valid(stored), bool) and isinstance(usable(stored), bool)
    assert isinstance(is_emulated(stored), bool) and len(cell_key(stored)) == 4
    row = result_row(stored)
    assert isinstance(row["status"], str)
    cells = evaluate([stored], [stored], Gates())
    assert len(cells) == 1 and cells[0].status in ("pass", "improved", "new", "regression", "error", "invalid")
