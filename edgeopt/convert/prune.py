"""Magnitude pruning on Keras 3: the smallest-magnitude weights of each Conv/Dense kernel are set to zero,
the fraction zeroed rising along a schedule while the model fine-tunes, the masks re-applied after every step.

Why not tensorflow-model-optimization: tfmot's pruning wrappers run on legacy Keras only (``TF_USE_LEGACY_KERAS=1``
+ tf_keras). That switch is process-wide and the rest of the pipeline (loading, export, TFLite/ONNX conversion)
runs on Keras 3, so using tfmot means copying every layer's weights into a tf_keras twin (in a separate process)
and back. What tfmot's pruning does for a converter is small: per-layer magnitude masks, a PolynomialDecay
schedule, ``strip_pruning``. That is implemented here as a Keras callback on an ordinary Keras 3 model (so any
layer Keras 3 loads works, no wrapper classes end up in the saved model, nothing to strip).

Schedule (tfmot's ``PolynomialDecay``): s(t) = s_f + (s_i - s_f) * (1 - p)^power, p = clip((t - t_b) / (t_e - t_b)),
masks recomputed every ``frequency`` steps; after ``t_e`` the target sparsity holds and the rest of the
fine-tuning recovers accuracy. Int8 conversion keeps zeros exact (symmetric weight quantisation, zero point 0;
BatchNorm folding multiplies each output channel by a constant), so the sparsity is asserted on the .tflite.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgeopt.config import PruneOptions
from edgeopt.convert.training import (
    EpochLog,
    Note,
    accuracy,
    fit,
    output_kind,
    params,
    recalibrate_batch_norm,
    start_fine_tuning,
    steps_per_epoch,
)
from edgeopt.inputs.data import Dataset

# layer class -> (kind, its pruned kernel); a separable conv's pointwise kernel holds nearly all its weights and is
# the one pruned (as TF-MOT's prune registry does), its depthwise kernel stays dense
KINDS = {"Conv1D": ("conv", "kernel"), "Conv2D": ("conv", "kernel"), "Conv3D": ("conv", "kernel"),
         "Conv2DTranspose": ("conv", "kernel"), "SeparableConv1D": ("conv", "pointwise_kernel"),
         "SeparableConv2D": ("conv", "pointwise_kernel"), "DepthwiseConv2D": ("depthwise", "depthwise_kernel"),
         "Dense": ("dense", "kernel")}


def schedule(step: int, total: int, opts: PruneOptions) -> float:
    """The sparsity wanted after ``step`` of ``total`` fine-tuning steps."""
    if opts.schedule == "constant":
        return opts.sparsity
    begin, end = opts.begin_fraction * total, max(opts.end_fraction * total, 1.0)
    p = min(max((step - begin) / max(end - begin, 1e-9), 0.0), 1.0)
    return float(opts.sparsity + (opts.initial_sparsity - opts.sparsity) * (1.0 - p) ** opts.power)


def prunable(model: Any, opts: PruneOptions) -> list[tuple[Any, Any]]:
    """(layer, kernel variable) pairs pruned by these options."""
    out = []
    for layer in model.layers:
        kind, attr = KINDS.get(type(layer).__name__, (None, ""))
        if kind is None or kind not in opts.layers:
            continue
        kernel = getattr(layer, attr, None)
        if kernel is None or int(np.prod(kernel.shape)) < max(opts.min_weights, 2):
            continue
        out.append((layer, kernel))
    return out


def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """1 for the weights kept, 0 for the ``round(sparsity * n)`` smallest magnitudes (exact count, ties broken
    by position)."""
    n = w.size
    k = int(round(sparsity * n))
    mask = np.ones(n, dtype=w.dtype)
    if k > 0:
        mask[np.argsort(np.abs(w).reshape(-1), kind="stable")[:k]] = 0
    return mask.reshape(w.shape)


class Pruner:
    """Keeps one mask per kernel; a Keras callback updates the masks on schedule and re-applies them after every
    optimiser step (the optimiser moves pruned weights; the mask puts them back to zero)."""

    def __init__(self, kernels: list[tuple[Any, Any]], opts: PruneOptions, total_steps: int) -> None:
        import keras

        self.kernels, self.opts, self.total = kernels, opts, total_steps
        self.masks = [np.ones(tuple(k.shape), dtype=np.float32) for _, k in kernels]
        self.step = 0
        self.current = 0.0
        outer = self

        class _CB(keras.callbacks.Callback):
            def on_train_begin(self, logs: Any = None) -> None:
                outer.update(schedule(0, outer.total, outer.opts))

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                outer.step += 1
                if outer.step % outer.opts.frequency == 0 or outer.step >= outer.total:
                    outer.update(schedule(outer.step, outer.total, outer.opts))
                else:
                    outer.apply()

            def on_train_end(self, logs: Any = None) -> None:
                outer.update(outer.opts.sparsity)  # exactly the target, whatever the step count was

        self.callback = _CB()

    def update(self, sparsity: float) -> None:
        # a weight once pruned stays pruned: rank magnitudes of the masked kernel (pruned weights are 0)
        self.current = sparsity
        for i, (_, k) in enumerate(self.kernels):
            w = np.asarray(k.numpy()) * self.masks[i]
            self.masks[i] = magnitude_mask(w, sparsity)
        self.apply()

    def apply(self) -> None:
        for (_, k), m in zip(self.kernels, self.masks):
            k.assign(np.asarray(k.numpy()) * m)


def keras_sparsity(model: Any, opts: PruneOptions | None = None) -> dict[str, Any]:
    """Zeros in the prunable kernels of a Keras model (all Conv/Dense kernels without options)."""
    opts = opts or PruneOptions(sparsity=0.0)
    zeros = total = 0
    layers = {}
    for layer, k in prunable(model, opts):
        w = np.asarray(k.numpy())
        z = int(np.sum(w == 0))
        layers[layer.name] = round(z / w.size, 4)
        zeros, total = zeros + z, total + w.size
    return {"zeros": zeros, "weights": total, "sparsity": round(zeros / total, 6) if total else 0.0,
            "layers": layers}


def prune_model(teacher: Any, data: Dataset, opts: PruneOptions, *, seed: int, note: Note,
                evalset: Dataset | None = None) -> tuple[Any, dict[str, Any]]:
    """A pruned, fine-tuned copy of ``teacher`` and the record of the run."""
    import keras

    t0 = time.perf_counter()
    model, ts = start_fine_tuning(teacher, data, opts, note, seed=seed, what="prune")
    kernels = prunable(model, opts)
    if not kernels:
        raise_no_kernels(opts)
    total = opts.epochs * steps_per_epoch(len(ts.x), opts)
    pruner = Pruner(kernels, opts, total)
    kind = output_kind(teacher, ts.x)
    log = EpochLog("prune", opts.epochs, note, extra=lambda: {"sparsity": pruner.current})
    note(f"prune: {len(kernels)} kernels to {opts.sparsity:.0%} sparsity ({opts.schedule}), "
         f"{opts.epochs} epochs on {len(ts.x)} samples")
    fit(model, ts.x, ts.y, opts, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=kind == "logits"),
        metrics=["accuracy"], callbacks=[pruner.callback], log=log, decay=False)
    recalibrated = recalibrate_batch_norm(model, ts.x)
    achieved = keras_sparsity(model, opts)
    info: dict[str, Any] = {
        "kind": "prune", "settings": opts.model_dump(), "seed": seed, "labels_from": ts.labels_from,
        "train_samples": int(len(ts.x)), "batch_norm_recalibrated": recalibrated, "steps": pruner.step,
        "history": log.history,
        "params": {"source": params(teacher), "transformed": params(model),
                   "nonzero": params(model) - achieved["zeros"]},
        "sparsity": achieved,
        "sparsity_all_kernels": {k: v for k, v in keras_sparsity(model).items() if k != "layers"},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if evalset is not None and evalset.y is not None:
        info["float_accuracy"] = {"source": accuracy(teacher, evalset.x, evalset.y),
                                  "transformed": accuracy(model, evalset.x, evalset.y)}
    return model, info


def raise_no_kernels(opts: PruneOptions) -> None:
    from edgeopt.errors import ConfigError

    raise ConfigError(f"prune: the model has no {'/'.join(opts.layers)} kernel with at least "
                      f"{opts.min_weights} weights to prune", "check prune.layers and prune.min_weights")
