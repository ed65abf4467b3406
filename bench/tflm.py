"""TFLite Micro benchmark (issues 7, 13): the arena on the emulated Cortex-M7 vs on the build host vs edgeopt's
static estimate, side by side in one run.

  - the bundled example (MNIST CNN), int8 for cortex-m7 through `edgeopt build`
  - a keyword-spotting DS-CNN built in code (input 49x10x1, conv + 4 depthwise-separable blocks, average pool,
    dense 12; random weights, random calibration), int8 with int8 I/O, batch 1

For each: model bytes; the target's exact arena (the bundle's harness linked against TFLM built for Cortex-M7 with
CMSIS-NN, bisection over boots on qemu-system-arm -M mps2-an500); the host's exact arena (real TFLM interpreter,
64-bit, reference kernels) with its head/tail; the static estimate; estimate / host exact (goal: within 10%);
whether the target's int8 outputs are identical to host TFLM's; flash/RAM of the linked image vs the budget; the
QEMU instruction count per inference (a relative cost, not cycles); the TFLM library build (cold, from its record,
and this run's). Needs a TFLM source (EDGEOPT_TFLM_SRC or the shared bundle); without one the target columns say so.

Usage: .venv/bin/python bench/tflm.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from edgeopt.config import load_target  # noqa: E402
from edgeopt.convert.tflm import analyse  # noqa: E402


def example_int8(tmp: Path) -> tuple[bytes, np.ndarray]:
    from edgeopt.build import BuildRequest, build
    from edgeopt.config import load_profile

    saved = os.environ.get("EDGEOPT_TFLM_SRC")
    os.environ["EDGEOPT_TFLM_SRC"] = "off"  # only the model here: row() runs the emulated target once
    try:
        res = build(BuildRequest(target=load_target("cortex-m7"), profiles=[load_profile("int8")], out=tmp / "art"))[0]
    finally:
        if saved is None:
            os.environ.pop("EDGEOPT_TFLM_SRC")
        else:
            os.environ["EDGEOPT_TFLM_SRC"] = saved
    ref = np.load(res.directory / "reference.npz")
    return (res.directory / "model.tflite").read_bytes(), ref["x"]


def dscnn_int8(seed: int = 0) -> tuple[bytes, np.ndarray]:
    from edgeopt.tf_env import quiet_tensorflow

    tf = quiet_tensorflow()
    keras = tf.keras
    L = keras.layers
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((49, 10, 1), batch_size=1)
    x = L.Conv2D(64, (10, 4), strides=(2, 2), padding="same", use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    for _ in range(4):
        x = L.DepthwiseConv2D((3, 3), padding="same", use_bias=False)(x)
        x = L.ReLU()(L.BatchNormalization()(x))
        x = L.Conv2D(64, (1, 1), use_bias=False)(x)
        x = L.ReLU()(L.BatchNormalization()(x))
    x = L.AveragePooling2D(pool_size=(int(x.shape[1]), int(x.shape[2])))(x)
    x = L.Flatten()(x)
    out = L.Dense(12, activation="softmax")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    calib = rng.normal(0.0, 1.0, (64, 49, 10, 1)).astype(np.float32)

    def rep():  # type: ignore[no-untyped-def]
        for i in range(len(calib)):
            yield [calib[i:i + 1]]

    import contextlib
    import io

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the traced signature
        flatbuffer = conv.convert()
    return flatbuffer, calib[:32]


def row(name: str, model: bytes, x: np.ndarray) -> dict:
    target = load_target("cortex-m7")
    t = time.perf_counter()
    a = analyse(model, target, x[0], x)
    dt = time.perf_counter() - t
    s = a["summary"]
    ar, est, run, budget = s["arena"], s["static_estimate"], s["target_run"], s["budget"]
    host, tgt = ar["host"], ar["target"]
    r = {
        "model": name, "model_bytes": s["model_bytes"], "ops": {o["op"]: o["count"] for o in s["ops"]},
        "target_exact": tgt.get("exact_bytes"), "host_exact": host["exact_bytes"],
        "estimate_total": est["total_bytes"], "arena_basis": ar["basis"], "arena_recommended": ar["recommended_bytes"],
        "host_head": host["head_bytes"], "host_tail": host["tail_bytes"],
        "estimate_head": est["head_bytes"], "estimate_tail": est["tail_bytes"],
        "target_over_host": round(tgt["exact_bytes"] / host["exact_bytes"], 4) if tgt["measured"] else None,
        "estimate_over_exact": est["vs_exact"]["total_ratio"],
        "estimate_over_target": (est["vs_target"] or {}).get("total_ratio"),
        "head_estimate_over_exact": est["vs_exact"]["head_ratio"],
        "parity_max_step": s["parity"].get("max_step_diff"),
        "parity_values_differing": s["parity"].get("values_differing"),
        "parity_values": s["parity"].get("values"), "analyse_seconds": round(dt, 3),
        "flash_needed": budget["flash"]["needed_bytes"], "flash_budget": budget["flash"]["budget_bytes"],
        "ram_needed": budget["ram"]["needed_bytes"], "ram_budget": budget["ram"]["budget_bytes"],
        "budget_basis": budget["basis"], "target_reason": run.get("reason"),
    }
    if run["measured"]:
        vs_host = run["outputs"]["vs_host_tflm"]
        r.update({
            "target_boots": tgt["search"]["boots"], "target_search_seconds": tgt["search"]["seconds"],
            "outputs_identical_to_host_tflm": vs_host["identical"], "target_values_differing": vs_host["values_differing"],
            "target_vs_litert_max_step": run["outputs"]["vs_litert"].get("max_step_diff"),
            "text": run["size"]["text"], "data": run["size"]["data"], "bss": run["size"]["bss"],
            "qemu_icount_instructions": run["qemu_icount"]["instructions_median"],
            "lib_cold_build_seconds": run["library"]["cold_build_seconds"], "lib_seconds_this_run": run["library"]["seconds"],
            "lib_cached": run["library"]["cached"], "target_run_seconds": run["seconds"],
        })
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-bench-tflm-") as tmp:
        model, x = example_int8(Path(tmp))
        rows.append(row("example MNIST CNN int8", model, x))
    model, x = dscnn_int8()
    rows.append(row("DS-CNN KWS 49x10 int8", model, x))

    cols = [("model", 24), ("model_bytes", 11), ("target_exact", 12), ("host_exact", 10), ("estimate_total", 14),
            ("target_over_host", 16), ("estimate_over_exact", 19), ("estimate_over_target", 20),
            ("arena_basis", 11), ("arena_recommended", 17), ("analyse_seconds", 15)]
    print("arena bytes: target = emulated Cortex-M7 (TFLM + CMSIS-NN, 32-bit, bisection over QEMU boots); "
          "host = tflite-micro wheel (64-bit, reference kernels); estimate = edgeopt's static plan")
    print("  ".join(f"{c:>{w}}" for c, w in cols))
    for r in rows:
        print("  ".join(f"{str(r[c]):>{w}}" for c, w in cols))
    for r in rows:
        ok = abs(r["estimate_over_exact"] - 1) <= 0.10
        print(f"{r['model']}: estimate/host exact {r['estimate_over_exact']:.4f} ({'within' if ok else 'OUTSIDE'} 10%); "
              f"host TFLM vs LiteRT: {r['parity_values_differing']} of {r['parity_values']} values differ, "
              f"max {r['parity_max_step']} step; ops {r['ops']}")
        if r["target_exact"] is None:
            print(f"  emulated Cortex-M7: not measured ({r['target_reason']})")
            continue
        print(f"  emulated Cortex-M7: int8 outputs identical to host TFLM: {'yes' if r['outputs_identical_to_host_tflm'] else 'NO'}"
              f" ({r['target_values_differing']} of {r['parity_values']} values differ; vs LiteRT max "
              f"{r['target_vs_litert_max_step']} step); {r['target_boots']} boots in {r['target_search_seconds']} s")
        print(f"  image (arm-none-eabi-size): text {r['text']:,} data {r['data']:,} bss {r['bss']:,}; flash "
              f"{r['flash_needed']:,} of {r['flash_budget']:,} B, RAM {r['ram_needed']:,} of {r['ram_budget']:,} B "
              f"(incl. runtime overhead); QEMU -icount ~{r['qemu_icount_instructions']:,} instructions per inference "
              "(relative cost, not cycles)")
        print(f"  TFLM library: cold build {r['lib_cold_build_seconds']} s (recorded when built), this run "
              f"{r['lib_seconds_this_run']} s ({'cached' if r['lib_cached'] else 'built now'}); target run "
              f"{r['target_run_seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    ok = all(abs(r["estimate_over_exact"] - 1) <= 0.10 and r.get("outputs_identical_to_host_tflm", True) for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
