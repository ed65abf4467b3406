"""The bench run's summary counts what the table shows: a result measured under disturbed conditions (the agent's
``valid: false``: other load, throttling) is valid for bench (it ran: exit 0) but counted as disturbed."""

from __future__ import annotations

from pathlib import Path

from edgeopt.bench.run import BenchRun


def _result(valid: bool, agent_valid: bool | None) -> dict:
    return {"target": "pi", "valid": valid, "transfer": {"total": 10},
            "error": None if valid else {"kind": "infrastructure", "message": "gone"},
            "agent": None if agent_valid is None else {"valid": agent_valid}}


def test_disturbed_results_are_counted_apart() -> None:
    run = BenchRun("r", [_result(True, True), _result(True, False), _result(False, None)], "s", Path("x"), 1.0)
    s = run.summary()
    assert (s["results"], s["valid"], s["disturbed"]) == (3, 2, 1) and run.exit_code == 3
    calm = BenchRun("r", [_result(True, True), _result(True, False)], "s", Path("x"), 1.0)
    assert calm.summary()["disturbed"] == 1 and calm.exit_code == 0
