"""Real-world models (issue 11): the trap corpus the tests export the way the world does (tests/trap_models.py),
built for `rpi4` with fp32, dynamic, int8 and int8-auto in both formats, side by side in one run.

Prints, per model: build seconds, whether an ONNX input got TFLite artifacts (onnx2tf) and their float parity, and
each artifact's verdict with its worst figure. Then the figures the issue asks for:
  - verdicts that are right: the YOLO-style head's full int8 is `broken` and int8-auto is `ok` (both formats);
    every fp32 artifact `ok`; int8-auto never worse than int8 (goal: all)
  - ONNX inputs that get TFLite artifacts (goal: all)
  - detector: worst class-channel SNR full int8 vs int8-auto, share of weights still int8 (goal >= 90 %),
    int8-auto bytes / full-int8 bytes (goal <= 1.15)
  - ONNX -> TFLite float parity, range-relative max error (goal <= 1e-5), per model

Usage: .venv/bin/python bench/trap_corpus.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from trap_models import build_corpus  # noqa: E402

from edgeopt.build import BuildRequest, build  # noqa: E402
from edgeopt.config import load_profile, load_target  # noqa: E402

PROFILES = ["fp32", "dynamic", "int8", "int8-auto"]
RANK = {"ok": 0, "degraded": 1, "broken": 2}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    corpus = build_corpus()
    rows, checks = [], []
    with tempfile.TemporaryDirectory(prefix="edgeopt-bench-trap-") as tmp:
        for name, m in corpus.items():
            if m.fmt != "onnx":
                continue
            t0 = time.perf_counter()
            results = build(BuildRequest(target=load_target("rpi4"), profiles=[load_profile(p) for p in PROFILES],
                                         model=str(m.path), data=str(m.calib), eval=str(m.eval), out=Path(tmp) / name))
            seconds = time.perf_counter() - t0
            arts = {(r.profile, a["format"]): a for r in results for a in r.manifest["artifacts"]}
            tfl = arts.get(("fp32", "tflite"))
            parity = max(o["relative_max_error"] for o in tfl["quality"]["outputs"].values()) if tfl else None
            row = {"model": name, "kind": m.kind, "build_seconds": round(seconds, 1),
                   "tflite_from_onnx": all((p, "tflite") in arts for p in PROFILES),
                   "onnx_to_tflite_rel_max_error": parity,
                   "verdicts": {f"{p}/{f}": a["quality"]["verdict"] for (p, f), a in sorted(arts.items())}}
            for fmt in ("tflite", "onnx"):
                fp32, int8, auto = (arts.get((p, fmt)) for p in ("fp32", "int8", "int8-auto"))
                if fp32 is None or int8 is None or auto is None:
                    checks.append((f"{name} {fmt}: artifacts exist", False))
                    continue
                checks.append((f"{name} {fmt}: fp32 ok", fp32["quality"]["verdict"] == "ok"))
                checks.append((f"{name} {fmt}: int8-auto no worse than int8",
                               RANK[auto["quality"]["verdict"]] <= RANK[int8["quality"]["verdict"]]))
                if name == "yolo_head":
                    checks.append((f"{name} {fmt}: full int8 broken", int8["quality"]["verdict"] == "broken"))
                    checks.append((f"{name} {fmt}: int8-auto ok", auto["quality"]["verdict"] == "ok"))
                    mp = auto["conversion"]["mixed_precision"]
                    row[f"detector_{fmt}"] = {
                        "class_channel_snr_db_int8": int8["quality"]["outputs"]["output0"]["channel_snr_db_min"],
                        "class_channel_snr_db_int8_auto": auto["quality"]["outputs"]["output0"]["channel_snr_db_min"],
                        "constant_channels_int8": int8["quality"]["outputs"]["output0"]["constant_channels"],
                        "float_layers": mp["float_layers"],
                        "int8_weight_share": auto["weight_sparsity"]["int8_share"],
                        "bytes_int8_auto_over_full_int8": mp["bytes_vs_full_int8"],
                        "trials": len(mp["trials"])}
            rows.append(row)
    for r in rows:
        print(f"{r['model']:<16} {r['kind']:<13} build {r['build_seconds']:>6.1f} s   TFLite from ONNX: "
              f"{'yes' if r['tflite_from_onnx'] else 'NO'}   float parity {r['onnx_to_tflite_rel_max_error']:.2g}")
        print("    " + "  ".join(f"{k}={v}" for k, v in r["verdicts"].items()))
        for fmt in ("tflite", "onnx"):
            d = r.get(f"detector_{fmt}")
            if d:
                print(f"    detector {fmt}: class-channel SNR int8 {d['class_channel_snr_db_int8']:.1f} dB -> int8-auto "
                      f"{d['class_channel_snr_db_int8_auto']:.1f} dB; float layers {len(d['float_layers'])}; "
                      f"int8 weight share {d['int8_weight_share']:.3f} (goal >= 0.9); bytes int8-auto / int8 "
                      f"{d['bytes_int8_auto_over_full_int8']:.3f} (goal <= 1.15); {d['trials']} trials")
    right = sum(ok for _, ok in checks)
    print(f"\nverdict checks right: {right}/{len(checks)} (goal: all)")
    for what, ok in checks:
        if not ok:
            print(f"    WRONG: {what}")
    with_tflite = sum(r["tflite_from_onnx"] for r in rows)
    print(f"ONNX inputs that got TFLite artifacts: {with_tflite}/{len(rows)} (goal: all)")
    worst = max(r["onnx_to_tflite_rel_max_error"] or 0.0 for r in rows)
    print(f"ONNX -> TFLite float parity, worst range-relative max error: {worst:.2g} (goal <= 1e-5)")
    if args.json:
        Path(args.json).write_text(json.dumps({"models": rows, "checks": checks}, indent=2))
    return 0 if right == len(checks) and with_tflite == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
