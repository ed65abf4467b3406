"""TFLite Micro benchmark (issue 7): exact arena vs edgeopt's static estimate, side by side in one run.

  - the bundled example (MNIST CNN), int8 for cortex-m7 through `edgeopt build`
  - a keyword-spotting DS-CNN built in code (input 49x10x1, conv + 4 depthwise-separable blocks, average pool,
    dense 12; random weights, random calibration), int8 with int8 I/O, batch 1

For each: model bytes, exact arena (real TFLM interpreter, bisection), its head/tail, the static estimate and
estimate / exact (goal: within 10%), the head estimate / exact head, and the time the arena search took.

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

    res = build(BuildRequest(target=load_target("cortex-m7"), profiles=[load_profile("int8")], out=tmp / "art"))[0]
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
    ar, est = s["arena"], s["static_estimate"]
    return {
        "model": name, "model_bytes": s["model_bytes"], "ops": {o["op"]: o["count"] for o in s["ops"]},
        "arena_exact": ar["exact_bytes"], "arena_head": ar["head_bytes"], "arena_tail": ar["tail_bytes"],
        "arena_recommended": ar["recommended_bytes"], "probes": ar["search"]["probes"],
        "estimate_total": est["total_bytes"], "estimate_head": est["head_bytes"], "estimate_tail": est["tail_bytes"],
        "estimate_over_exact": est["vs_exact"]["total_ratio"],
        "head_estimate_over_exact": est["vs_exact"]["head_ratio"],
        "parity_max_step": s["parity"].get("max_step_diff"),
        "parity_values_differing": s["parity"].get("values_differing"),
        "parity_values": s["parity"].get("values"), "analyse_seconds": round(dt, 3),
    }


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

    cols = [("model", 24), ("model_bytes", 11), ("arena_exact", 11), ("arena_head", 10), ("arena_tail", 10),
            ("estimate_total", 14), ("estimate_over_exact", 19), ("head_estimate_over_exact", 24),
            ("arena_recommended", 17), ("probes", 6), ("analyse_seconds", 15)]
    print("  ".join(f"{c:>{w}}" for c, w in cols))
    for r in rows:
        print("  ".join(f"{str(r[c]):>{w}}" for c, w in cols))
    for r in rows:
        ok = abs(r["estimate_over_exact"] - 1) <= 0.10
        print(f"{r['model']}: estimate/exact {r['estimate_over_exact']:.4f} ({'within' if ok else 'OUTSIDE'} 10%); "
              f"TFLM vs LiteRT: {r['parity_values_differing']} of {r['parity_values']} values differ, "
              f"max {r['parity_max_step']} step; ops {r['ops']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(abs(r["estimate_over_exact"] - 1) <= 0.10 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
