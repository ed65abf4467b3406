"""The target's flash and RAM budgets: what the firmware needs against what the target states.

Measured when the firmware was linked for the emulated target (flash = text + data, RAM = data + bss + the
target's ``runtime_overhead_bytes``); otherwise flash = model + sample arrays + a stated code-size allowance for the
TFLM interpreter and kernels, RAM = arena + ``runtime_overhead_bytes``. Over budget is a ``BudgetError`` saying by
how much.
"""

from __future__ import annotations

from typing import Any

from edgeopt.config import Target
from edgeopt.errors import BudgetError

# Stated allowance (documented in docs/tflm.md and in the bundle's README).
CODE_SIZE_OVERHEAD_BYTES = 128 * 1024  # flash for TFLM interpreter + kernels + harness (-Os), not measured here


def check_budget(target: Target, flash_needed: int, flash_detail: str, ram_needed: int, ram_detail: str
                 ) -> dict[str, Any]:
    """Needed vs budget bytes (and headroom) for flash and RAM; raises ``BudgetError`` on the first one over."""
    mem = target.memory
    res: dict[str, Any] = {
        "flash": {"needed_bytes": flash_needed, "budget_bytes": mem.flash_bytes, "detail": flash_detail},
        "ram": {"needed_bytes": ram_needed, "budget_bytes": mem.ram_bytes, "detail": ram_detail},
    }
    for kind in ("flash", "ram"):
        budget = res[kind]["budget_bytes"]
        res[kind]["headroom_bytes"] = None if budget is None else budget - res[kind]["needed_bytes"]
        res[kind]["ok"] = budget is None or res[kind]["needed_bytes"] <= budget
    for kind in ("flash", "ram"):
        r = res[kind]
        if not r["ok"]:
            over = r["needed_bytes"] - r["budget_bytes"]
            label = "RAM" if kind == "ram" else "flash"
            raise BudgetError(
                f"{target.name}: the firmware needs {r['needed_bytes']:,} B of {label} "
                f"({r['detail']}) but the target has {r['budget_bytes']:,} B: {over:,} B ({over / 1024:.1f} KiB) "
                "over budget",
                "use a smaller profile (e.g. int8 instead of fp32), a smaller model, or a target with more memory")
    return res


def firmware_budget(target: Target, model_bytes: int, sample_bytes: int, code_overhead_bytes: int,
                    arena_bytes: int, measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """``check_budget()`` for a TFLM bundle. ``measured``: ``arm-none-eabi-size`` of the linked image (flash = text +
    data, RAM = data + bss with the arena in it); without it, the model, its sample arrays, the stated code allowance
    and the arena."""
    overhead = target.memory.runtime_overhead_bytes
    if measured:
        res = check_budget(
            target, measured["flash_bytes"],
            f"text {measured['text']:,} + data {measured['data']:,} of the linked image (arm-none-eabi-size)",
            measured["ram_bytes"] + overhead,
            f"data {measured['data']:,} + bss {measured['bss']:,} (arena {measured['arena_bytes']:,} in it) of the "
            f"linked image + runtime overhead {overhead:,}")
        res["basis"] = "measured: arm-none-eabi-size of the firmware linked for the emulated Cortex-M7"
        return res
    res = check_budget(
        target, model_bytes + sample_bytes + code_overhead_bytes,
        f"model {model_bytes:,} + sample arrays {sample_bytes:,} + TFLM code allowance {code_overhead_bytes:,}",
        arena_bytes + overhead, f"arena {arena_bytes:,} + runtime overhead {overhead:,}")
    res["basis"] = "allowance: no image was linked for the target"
    return res
