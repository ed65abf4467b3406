"""The per-output quality verdict: is an artifact's output still what the float model computes?

``assess`` compares, output by output, the float model's outputs with an artifact's (dequantised to float32) on
the same inputs and returns ``ok`` / ``degraded`` / ``broken`` with the figures behind it. Top-1 agreement alone
passes a detector whose class scores all collapsed to one value (their range is drowned by 0-640 px boxes in a
per-tensor int8 scale); the per-channel figures here catch it. docs/quality.md explains each figure.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.analyze.evaluate import check_labels_fit
from edgeopt.config.profile import QualityLevel, QualityOptions
from edgeopt.errors import DataError
from edgeopt.inputs.tensors import is_classifier

DB_CAP = 200.0  # an exact output has infinite SQNR; JSON has no infinity
VERDICTS = ("ok", "degraded", "broken")
MAX_EXAMPLES = 8  # constant channels named in the figures (the count covers all)
CHUNK_VALUES = 1 << 20  # float64 working set of the whole-output sums, in values
# (figure, QualityLevel field, kind): checked in this order; the first failing figure of the worst level is "worst"
CHECKS = (
    ("constant_channel_share", "max_constant_channel_share", "max"),
    ("channel_snr_db_min", "min_channel_snr_db", "min"),
    ("sqnr_db", "min_sqnr_db", "min"),
    ("cosine_min", "min_cosine", "min"),
    ("relative_max_error", "max_relative_error", "max"),
    ("top1_agreement", "min_top1_agreement", "min"),
    ("accuracy_drop_pp", "max_accuracy_drop_pp", "max"),
)


def assess(names: list[str], reference: list[np.ndarray], candidate: list[np.ndarray], opts: QualityOptions,
           labels: np.ndarray | None = None) -> dict[str, Any]:
    """Judge every output; the verdict is the worst output's. ``reference[k]`` / ``candidate[k]``: output ``k``
    of the float model / the artifact, shape ``(N, ...)``. ``labels`` (N,) class indices score the first
    classifier output (rank 2, >= 2 classes). The result is JSON-safe (no NaN/inf)."""
    _check_inputs(names, reference, candidate)
    outputs: dict[str, dict[str, Any]] = {}
    failures: list[tuple[int, str, str, float, float]] = []  # (level, output, figure, value, threshold)
    labelled = labels is not None
    for name, ref, cand in zip(names, reference, candidate):
        use_labels = labels if labelled and is_classifier(ref.shape) else None
        if use_labels is not None:
            labelled = False
        figures = output_figures(ref, cand, opts, use_labels)
        outputs[name] = figures
        failures += [(level, name, *f) for level, f in judge(figures, opts)]
    if not failures:
        verdict = "ok"
        worst_name = min(outputs, key=lambda n: outputs[n]["sqnr_db"] if outputs[n]["sqnr_db"] is not None
                         else -DB_CAP)
        threshold = opts.degraded.min_sqnr_db
        worst = {"output": worst_name, "figure": "sqnr_db", "value": outputs[worst_name]["sqnr_db"],
                 "threshold": threshold}
    else:
        top = max(level for level, *_ in failures)
        verdict = VERDICTS[top]
        _, out, fig, value, threshold = next(f for f in failures if f[0] == top)
        worst = {"output": out, "figure": fig, "value": value, "threshold": threshold}
    failures.sort(key=lambda f: -f[0])
    reasons = [f"{out}: {fig} {_fmt(value)} {'<' if _kind(fig) == 'min' else '>'} {_fmt(thr)} ({VERDICTS[lv]})"
               for lv, out, fig, value, thr in failures]
    return {"verdict": verdict, "worst": worst, "reasons": reasons, "outputs": outputs}


def channel_axis(shape: tuple[int, ...]) -> int | None:
    """The axis whose entries are separate quantities: none for (N,), the last for (N, C); for rank >= 3 axis 1
    or the last one, whichever is shorter (axis 1 on a tie): [N, 4+C, anchors] and [N, K, H, W] give 1,
    [N, anchors, 5+C] and NHWC [N, H, W, K] the last axis."""
    if len(shape) < 2:
        return None
    if len(shape) == 2:
        return 1
    return 1 if shape[1] <= shape[-1] else len(shape) - 1


def output_figures(ref: np.ndarray, cand: np.ndarray, opts: QualityOptions,
                   labels: np.ndarray | None = None) -> dict[str, Any]:
    """The figures of one output (see docs/quality.md); ``None`` where a figure does not apply."""
    ref = np.asarray(ref, dtype=np.float32)
    cand = np.asarray(cand, dtype=np.float32)
    n = len(ref)
    figures: dict[str, Any] = {"shape": [int(d) for d in ref.shape], "samples": int(n)}
    bad = int(np.size(cand) - np.count_nonzero(np.isfinite(cand)))
    if bad:
        figures.update({"non_finite_values": bad, "sqnr_db": None, "classifier": is_classifier(ref.shape)})
        return figures
    lo, hi = float(ref.min()), float(ref.max())
    span = hi - lo
    scale = span if span > 0 else max(abs(hi), 1.0)
    flat_r, flat_c = ref.reshape(n, -1), cand.reshape(n, -1)
    rr, cc, rc, ee, max_err = _sample_sums(flat_r, flat_c)
    figures["float_range"] = [_num(lo), _num(hi)]
    figures["sqnr_db"] = _db(float(rr.sum()), float(ee.sum()))
    cos = _cosines(rr, cc, rc)
    figures["cosine_mean"] = _num(float(cos.mean()))
    figures["cosine_min"] = _num(float(cos.min()))
    figures["relative_max_error"] = _num(max_err / scale)
    figures["distinct_values"] = {"float": int(np.unique(ref).size), "artifact": int(np.unique(cand).size)}
    figures.update(_channel_figures(ref, cand, scale, opts))
    figures["classifier"] = is_classifier(ref.shape)
    if figures["classifier"]:
        figures.update(_classifier_figures(flat_r, flat_c, labels))
    return figures


def judge(figures: dict[str, Any], opts: QualityOptions) -> list[tuple[int, tuple[str, float, float]]]:
    """(level, (figure, value, threshold)) for every threshold an output misses; level 2 broken, 1 degraded."""
    if figures.get("non_finite_values"):
        return [(2, ("non_finite_values", float(figures["non_finite_values"]), 0.0))]
    found: list[tuple[int, tuple[str, float, float]]] = []
    dv = figures["distinct_values"]
    if dv["float"] > 1 and dv["artifact"] == 1:
        found.append((2, ("distinct_values", 1.0, 2.0)))
    for figure, field, kind in CHECKS:
        value = figures.get(figure)
        if value is None:
            continue
        for level, thresholds in ((2, opts.broken), (1, opts.degraded)):
            threshold = _threshold(thresholds, field)
            if threshold is not None and (value < threshold if kind == "min" else value > threshold):
                found.append((level, (figure, float(value), float(threshold))))
                break
    return found


def _channel_figures(ref: np.ndarray, cand: np.ndarray, scale: float, opts: QualityOptions) -> dict[str, Any]:
    """Per channel, over samples and positions: which channels vary in the float model, which of those are
    constant in the artifact, and the worst channel's SNR (its float variance over its mean square error: 0 dB or
    less carries nothing of its float variation). For rank >= 3 the other candidate axis (axis 1 or the last) is
    judged too when it holds at most :data:`MAX_SECOND_AXIS` entries, and the worse reported: which holds the
    quantities is a guess from the shape (``[N, 1, 4+1]``: one detection of 4 box coordinates and a score, whose
    collapse axis 1 alone hid)."""
    axis = channel_axis(ref.shape)
    figures = _channels_along(ref, cand, axis, scale, opts)
    other = None if axis is None or ref.ndim < 3 else (ref.ndim - 1 if axis == 1 else 1)
    if other is not None and other != axis and ref.shape[other] <= MAX_SECOND_AXIS:
        alt = _channels_along(ref, cand, other, scale, opts)
        if _severity(alt) > _severity(figures):
            figures = alt
    return figures


# the second axis is judged only when it is this short: a few quantities (4 box coordinates and a score), not the
# positions of a sequence or the anchors of a detector, each of which would be a "channel" of its own
MAX_SECOND_AXIS = 256


def _severity(figures: dict[str, Any]) -> tuple[float, float]:
    share = figures.get("constant_channel_share") or 0.0
    snr = figures.get("channel_snr_db_min")
    return (float(share), -float(snr) if snr is not None else float("-inf"))


def _channels_along(ref: np.ndarray, cand: np.ndarray, axis: int | None, scale: float,
                    opts: QualityOptions) -> dict[str, Any]:
    if axis is None:
        r, c = ref.reshape(1, -1), cand.reshape(1, -1)
    else:
        k = ref.shape[axis]
        r, c = np.moveaxis(ref, axis, 0).reshape(k, -1), np.moveaxis(cand, axis, 0).reshape(k, -1)
    varying, constant = 0, []
    worst_db, worst_channel = None, None
    for j in range(len(r)):
        rj, cj = r[j].astype(np.float64), c[j].astype(np.float64)
        span = float(rj.max() - rj.min())
        if span <= opts.channel_floor * scale:
            continue
        varying += 1
        if float(cj.max() - cj.min()) <= opts.constant_tolerance * span:
            constant.append(j)
        snr = _db(float(np.var(rj)), float(np.mean((rj - cj) ** 2)))
        if worst_db is None or snr < worst_db:
            worst_db, worst_channel = snr, j
    return {"channel_axis": axis, "channels": int(len(r)), "varying_channels": varying,
            "constant_channels": len(constant), "constant_channel_examples": constant[:MAX_EXAMPLES],
            "constant_channel_share": _num(len(constant) / varying) if varying else None,
            "channel_snr_db_min": worst_db, "worst_channel": worst_channel}


def _classifier_figures(flat_r: np.ndarray, flat_c: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    pred_r, pred_c = flat_r.argmax(1), flat_c.argmax(1)
    out: dict[str, Any] = {"top1_agreement": _num(float(np.mean(pred_r == pred_c)))}
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        check_labels_fit(labels, len(flat_r), flat_r.shape[1])
        acc, float_acc = float(np.mean(pred_c == labels)), float(np.mean(pred_r == labels))
        out.update({"accuracy": _num(acc), "float_accuracy": _num(float_acc),
                    "accuracy_drop_pp": _num(100 * (float_acc - acc))})
    return out


def _sample_sums(r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Per sample, in float64, a chunk of samples at a time (a detector's outputs are large): sum r^2, sum c^2,
    sum r*c, sum (r - c)^2; and the largest |r - c|."""
    n = len(r)
    sums = np.zeros((4, n))
    max_err = 0.0
    step = max(1, CHUNK_VALUES // max(1, r.shape[1]))
    for i in range(0, n, step):
        rk, ck = r[i:i + step].astype(np.float64), c[i:i + step].astype(np.float64)
        e = rk - ck
        sums[:, i:i + step] = [np.sum(rk * rk, 1), np.sum(ck * ck, 1), np.sum(rk * ck, 1), np.sum(e * e, 1)]
        max_err = max(max_err, float(np.abs(e).max(initial=0.0)))
    return sums[0], sums[1], sums[2], sums[3], max_err


def _cosines(rr: np.ndarray, cc: np.ndarray, dot: np.ndarray) -> np.ndarray:
    """Cosine similarity per sample; two all-zero samples agree (1), one all-zero against another does not (0)."""
    nr, nc = np.sqrt(rr), np.sqrt(cc)
    denom = nr * nc
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), np.where((nr == 0) & (nc == 0), 1.0, 0.0))
    return np.clip(cos, -1.0, 1.0)


def _db(signal: float, noise: float) -> float:
    """10 log10(signal / noise), capped at +-DB_CAP (an exact output: +DB_CAP)."""
    if noise <= 0:
        return DB_CAP
    if signal <= 0:
        return -DB_CAP
    return _num(float(np.clip(10 * np.log10(signal / noise), -DB_CAP, DB_CAP)))


def _num(x: float) -> float:
    """A finite, rounded float for JSON (6 significant digits)."""
    return float(f"{x:.6g}") if np.isfinite(x) else (DB_CAP if x > 0 else -DB_CAP)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _kind(figure: str) -> str:
    return next((kind for fig, _, kind in CHECKS if fig == figure), "max" if figure == "non_finite_values" else "min")


def _threshold(level: QualityLevel, field: str) -> float | None:
    value = getattr(level, field)
    return None if value is None else float(value)


def _check_inputs(names: list[str], reference: list[np.ndarray], candidate: list[np.ndarray]) -> None:
    if not names:
        raise DataError("no outputs to assess", "pass the model's output names with their arrays")
    if not len(names) == len(reference) == len(candidate):
        raise DataError(f"{len(names)} output names for {len(reference)} float and {len(candidate)} artifact "
                        "outputs", "give one name, one float array and one artifact array per output")
    if len(set(names)) != len(names):
        raise DataError(f"output names repeat: {names}", "give every output a distinct name")
    for name, ref, cand in zip(names, reference, candidate):
        if np.shape(ref) != np.shape(cand):
            raise DataError(f"output {name}: float shape {np.shape(ref)} but artifact shape {np.shape(cand)}",
                            "compare outputs of the same inputs, in the same layout")
        if np.ndim(ref) < 1 or np.shape(ref)[0] == 0:
            raise DataError(f"output {name}: no samples (shape {np.shape(ref)})",
                            "give arrays whose first axis counts samples (at least one)")
        if not np.isfinite(np.asarray(ref, dtype=np.float64)).all():
            raise DataError(f"output {name}: the float model's outputs hold NaN/Inf",
                            "assess on inputs the float model handles (check the data and the weights)")
