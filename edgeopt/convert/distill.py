"""Knowledge distillation: a smaller student learns from the source model (the teacher).

The student is either the teacher's own architecture made narrower (``width_multiplier``: every Conv's filters
and every Dense's units times w, through ``keras.models.clone_model`` with a clone function; the layers that
produce the model's output keep their size) with fresh weights, or a model file the user supplies (trained or not).

Loss (Hinton et al. 2015): ``alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(teacher/T) ||
softmax(student/T))``. The teacher's outputs are computed once on the training inputs (the teacher is fixed)
and travel with the labels as the ``y`` of an ordinary ``fit``; a teacher or student that ends in a softmax is
handled through log-probabilities.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.config import DistillOptions
from edgeopt.convert.training import (
    EpochLog,
    Note,
    accuracy,
    check_classifier,
    fit,
    output_kind,
    params,
    predict,
    recalibrate_batch_norm,
    seed_everything,
    training_set,
)
from edgeopt.errors import ConfigError, ModelError
from edgeopt.inputs.data import Dataset

WIDTH_KEYS = {"Conv1D": "filters", "Conv2D": "filters", "Conv3D": "filters", "Conv2DTranspose": "filters",
              "SeparableConv2D": "filters", "SeparableConv1D": "filters", "Dense": "units", "LSTM": "units",
              "GRU": "units", "SimpleRNN": "units"}


def narrow(teacher: Any, width_multiplier: float, min_units: int = 4) -> Any:
    """The teacher's architecture with filters/units scaled by ``width_multiplier`` (fresh weights)."""
    import keras

    if not 0 < width_multiplier < 1:
        raise ConfigError(f"distill.width_multiplier must be between 0 and 1 (exclusive), got {width_multiplier}",
                          "a student narrower than the teacher: e.g. 0.5")
    output_layers = {t._keras_history[0].name for t in teacher.outputs}  # noqa: SLF001

    def clone(layer: Any) -> Any:
        cfg = layer.get_config()
        key = WIDTH_KEYS.get(type(layer).__name__)
        if key and layer.name not in output_layers and key in cfg:
            cfg[key] = max(min_units, int(round(cfg[key] * width_multiplier)))
        return layer.__class__.from_config(cfg)

    try:
        student = keras.models.clone_model(teacher, clone_function=clone)
    except Exception as exc:  # noqa: BLE001 - shape mismatches (residual adds, fixed reshapes) surface here
        raise ModelError(f"cannot narrow the model by width_multiplier {width_multiplier}: "
                         f"{str(exc).strip().splitlines()[0][:200]}",
                         "supply a student model file instead (distill.student: student.keras)") from exc
    return student


def load_student(path: str, teacher: Any) -> Any:
    from edgeopt.inputs.model import open_model

    src = open_model(path)
    if src.kind != "keras":
        raise ModelError(f"distill.student {path}: a {src.kind} model; the student must be a Keras model",
                         "save it with model.save('student.keras')")
    student = src.load().keras_model
    if tuple(student.inputs[0].shape[1:]) != tuple(teacher.inputs[0].shape[1:]) or \
            tuple(student.outputs[0].shape[1:]) != tuple(teacher.outputs[0].shape[1:]):
        raise ModelError(f"distill.student {path}: input/output shapes {tuple(student.inputs[0].shape[1:])} -> "
                         f"{tuple(student.outputs[0].shape[1:])} differ from the teacher's "
                         f"{tuple(teacher.inputs[0].shape[1:])} -> {tuple(teacher.outputs[0].shape[1:])}",
                         "the student must take the teacher's inputs and give its outputs")
    return student


def make_student(teacher: Any, opts: DistillOptions, base_dir: Path | None = None) -> Any:
    if opts.student is not None:
        path = Path(opts.student)
        if not path.is_absolute() and base_dir is not None and not path.exists():
            path = base_dir / path
        student = load_student(str(path), teacher)
        what = f"student {opts.student}"
    else:
        student = narrow(teacher, opts.width_multiplier or 0.5, opts.min_units)
        what = f"width_multiplier {opts.width_multiplier}"
    if params(student) >= params(teacher):
        raise ConfigError(f"distill: the student ({what}) has {params(student):,} parameters, not fewer than the "
                          f"teacher's {params(teacher):,}",
                          "use a width_multiplier below 1 or a smaller student model")
    return student


def _log_probs(ops: Any, out: Any, kind: str) -> Any:
    return ops.log(ops.clip(out, 1e-7, 1.0)) if kind == "probabilities" else out


def distillation_loss(temperature: float, alpha: float, student_kind: str) -> Any:
    """y_true packs [label, teacher logits...]; y_pred is the student's output."""
    from keras import ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        labels = ops.cast(y_true[:, 0], "int32")
        teacher = y_true[:, 1:]
        s = _log_probs(ops, y_pred, student_kind)
        hard = ops.sparse_categorical_crossentropy(labels, s, from_logits=True)
        p_t = ops.softmax(teacher / temperature, axis=-1)
        log_p_s = ops.log_softmax(s / temperature, axis=-1)
        log_p_t = ops.log_softmax(teacher / temperature, axis=-1)
        soft = ops.sum(p_t * (log_p_t - log_p_s), axis=-1) * (temperature ** 2)
        return alpha * hard + (1.0 - alpha) * soft

    return loss


def _label_accuracy(y_true: Any, y_pred: Any) -> Any:
    from keras import ops

    return ops.mean(ops.cast(ops.equal(ops.cast(y_true[:, 0], "int32"),
                                       ops.cast(ops.argmax(y_pred, axis=-1), "int32")), "float32"))


def distill_model(teacher: Any, data: Dataset, opts: DistillOptions, *, seed: int, note: Note,
                  evalset: Dataset | None = None, base_dir: Path | None = None) -> tuple[Any, dict[str, Any]]:
    t0 = time.perf_counter()
    check_classifier(teacher, "distill")
    seed_everything(seed)
    student = make_student(teacher, opts, base_dir)
    ts = training_set(data, teacher, opts, note)
    t_kind = output_kind(teacher, ts.x, opts.teacher_outputs)
    s_kind = output_kind(student, ts.x, "auto") if opts.student else t_kind
    t_out = predict(teacher, ts.x).astype(np.float32)
    t_logits = np.log(np.clip(t_out, 1e-7, 1.0)) if t_kind == "probabilities" else t_out
    y_pack = np.concatenate([ts.y.astype(np.float32)[:, None], t_logits], axis=1)
    log = EpochLog("distill", opts.epochs, note)
    note(f"distill: student {params(student):,} params vs teacher {params(teacher):,} "
         f"({params(student) / params(teacher):.1%}), T={opts.temperature:g} alpha={opts.alpha:g}, "
         f"{opts.epochs} epochs on {len(ts.x)} samples")
    _label_accuracy.__name__ = "accuracy"
    fit(student, ts.x, y_pack, opts, loss=distillation_loss(opts.temperature, opts.alpha, s_kind),
        metrics=[_label_accuracy], callbacks=[], log=log)
    recalibrated = recalibrate_batch_norm(student, ts.x)
    info: dict[str, Any] = {
        "kind": "distill", "settings": opts.model_dump(), "seed": seed, "labels_from": ts.labels_from,
        "train_samples": int(len(ts.x)), "batch_norm_recalibrated": recalibrated, "history": log.history,
        "teacher_outputs": t_kind,
        "params": {"source": params(teacher), "transformed": params(student),
                   "ratio": round(params(student) / params(teacher), 4)},
        "student": {"from": opts.student or f"width_multiplier {opts.width_multiplier}",
                    "layers": len(student.layers)},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if evalset is not None and evalset.y is not None:
        info["float_accuracy"] = {"source": accuracy(teacher, evalset.x, evalset.y),
                                  "transformed": accuracy(student, evalset.x, evalset.y)}
    return student, info
