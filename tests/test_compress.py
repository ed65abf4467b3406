"""Compression profiles on the bundled example, trained and converted for real: pruned-int8 (sparsity asserted on
the int8 weights of the converted .tflite), distilled-int8 (a smaller student with an asserted accuracy), qat-int8
(int8 accuracy at least post-training int8's - 0.2 pp); bad settings give clear one-line errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from edgeopt.analyze.outputs import run_tflite
from edgeopt.build import BuildRequest, build, build_key
from edgeopt.config import load_profile, load_target
from edgeopt.errors import ConfigError, ConversionError, DataError, EdgeoptError

pytestmark = pytest.mark.slow
PROFILES = ["int8", "pruned-int8", "distilled-int8", "qat-int8"]


class Notes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def start(self, total_steps: int) -> None: ...
    def step(self, profile: str, what: str) -> None: ...
    def done(self, profile: str, what: str, seconds: float, detail: str = "") -> None: ...
    def artifact_done(self) -> None: ...

    def note(self, message: str) -> None:
        self.lines.append(message)


def build_compression(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """int8 (the post-training baseline) and the three compression profiles, built once per session into one
    directory (test_search.py reuses it: its builds are cache hits)."""
    out = tmp_path_factory.getbasetemp() / "compress-build"
    notes = Notes()
    req = BuildRequest(target=load_target("local"), profiles=[load_profile(p) for p in PROFILES], out=out)
    results = build(req, notes)
    return {"out": out, "results": {r.profile: r for r in results}, "notes": notes.lines, "request": req}


@pytest.fixture(scope="module")
def compressed(example_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return build_compression(tmp_path_factory)


def _tflite(result) -> tuple[Path, dict]:
    art = next(a for a in result.manifest["artifacts"] if a["format"] == "tflite")
    return result.directory / art["file"], art


def _accuracy(path: Path, evalset) -> float:
    return float(np.mean(run_tflite(path, evalset.x).argmax(1) == evalset.y))


def _kernel_tensors(path: Path) -> list[np.ndarray]:
    """The conv / fully-connected weight tensors of a .tflite, read here independently of edgeopt's analyzers."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    ops = it._get_ops_details()  # noqa: SLF001
    produced = {i for op in ops for i in op["outputs"]}
    out = []
    for op in ops:
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            idx = op["inputs"][1]
            if idx not in produced:
                out.append(it.get_tensor(idx))
    return out


def test_the_re_trained_profiles_are_judged_by_what_they_predict(compressed) -> None:
    """Fine-tuned, pruned and distilled models drift from the teacher's logits by design: judged by top-1 agreement,
    accuracy drop and collapse, each is ok on the example (qat-int8 was `degraded` here, worst-sample cosine 0.976
    to the teacher, while exactly as accurate)."""
    for profile in ("qat-int8", "pruned-int8", "distilled-int8"):
        r = compressed["results"][profile]
        assert r.manifest["verdict"] == "ok", (profile, [a["quality"] for a in r.manifest["artifacts"]])
        for art in r.manifest["artifacts"]:
            logits = art["quality"]["outputs"]["logits"]
            assert logits["top1_agreement"] >= 0.95 and logits["accuracy_drop_pp"] <= 2.0


def test_pruned_int8_sparsity_is_in_the_converted_int8_weights(compressed, example_eval) -> None:
    r = compressed["results"]["pruned-int8"]
    target = load_profile("pruned-int8").prune
    path, art = _tflite(r)
    kernels = _kernel_tensors(path)
    assert kernels and all(k.dtype == np.int8 for k in kernels)
    pruned = [k for k in kernels if k.size >= target.min_weights]
    assert len(pruned) == 4  # conv 2-4 and the hidden dense; the first conv and the classifier stay dense
    zeros = sum(int(np.sum(k == 0)) for k in pruned)
    weights = sum(k.size for k in pruned)
    assert zeros / weights >= target.sparsity, (zeros, weights)
    for k in pruned:  # every pruned kernel, not just the total
        assert np.mean(k == 0) >= target.sparsity - 1e-3
    assert art["weight_sparsity"]["pruned_tensors"]["sparsity"] == pytest.approx(zeros / weights, abs=1e-6)
    # the zeros pay off after compression, and accuracy holds (measured here, on the 1,000 held-out digits)
    int8_path, int8_art = _tflite(compressed["results"]["int8"])
    assert len(gzip.compress(path.read_bytes(), 9)) < 0.55 * len(gzip.compress(int8_path.read_bytes(), 9))
    assert art["bytes_gzip"] < 0.55 * int8_art["bytes_gzip"]
    acc = _accuracy(path, example_eval)
    assert acc == pytest.approx(art["metrics"]["accuracy"], abs=1e-9)
    assert acc >= 0.975, acc
    t = r.manifest["transform"]
    assert t["kind"] == "prune" and t["sparsity"]["sparsity"] >= target.sparsity
    assert [h["epoch"] for h in t["history"]] == list(range(1, target.epochs + 1))
    assert t["history"][-1]["sparsity"] == pytest.approx(target.sparsity)


def test_distilled_student_is_smaller_and_accurate(compressed, example_eval) -> None:
    r = compressed["results"]["distilled-int8"]
    t = r.manifest["transform"]
    assert t["kind"] == "distill" and t["params"]["transformed"] < 0.5 * t["params"]["source"]
    path, art = _tflite(r)
    _, int8_art = _tflite(compressed["results"]["int8"])
    assert art["params"] < 0.5 * int8_art["params"]  # counted in the converted model
    assert art["bytes"] < 0.5 * int8_art["bytes"]
    assert r.manifest["source"]["params"] == t["params"]["source"]  # the manifest's source stays the teacher
    acc = _accuracy(path, example_eval)
    assert acc >= 0.96, acc
    assert art["metrics"]["top1_agreement"] >= 0.96  # against the teacher's float outputs


def test_qat_int8_accuracy_at_least_ptq_int8(compressed, example_eval) -> None:
    qat_path, qat_art = _tflite(compressed["results"]["qat-int8"])
    ptq_path, _ = _tflite(compressed["results"]["int8"])
    qat_acc, ptq_acc = _accuracy(qat_path, example_eval), _accuracy(ptq_path, example_eval)
    assert qat_acc >= ptq_acc - 0.002, (qat_acc, ptq_acc)
    assert qat_art["inputs"][0]["dtype"] == "int8" and "DEQUANTIZE" not in qat_art["ops"]
    t = compressed["results"]["qat-int8"].manifest["transform"]
    assert sum(k["batch_norm_folded"] is not None for k in t["quantised_kernels"]) == 4


def _second(model, kind):
    """The model's second layer of ``kind`` (layer names depend on what else the process built)."""
    return [layer for layer in model.layers if isinstance(layer, kind)][1]


def test_qat_kernels_land_on_the_converters_int8_grid(compressed) -> None:
    """The trained kernels, BatchNorm folded in as the converter folds it, are already int8 values times the
    per-channel scale: conversion keeps them exactly (what makes the fine-tuning quantisation-aware)."""
    import keras

    r = compressed["results"]["qat-int8"]
    model = keras.models.load_model(r.directory / "trained.keras", compile=False)
    conv, bn = _second(model, keras.layers.Conv2D), _second(model, keras.layers.BatchNormalization)
    w = np.asarray(conv.kernel) * (np.asarray(bn.gamma) / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon))
    scale = np.abs(w).reshape(-1, w.shape[-1]).max(0) / 127
    q = w / scale
    assert np.max(np.abs(q - np.round(q))) < 1e-3
    # and a plain model trained without QAT is not on the grid
    src = keras.models.load_model(r.manifest["source"]["path"], compile=False)
    w0 = np.asarray(_second(src, keras.layers.Conv2D).kernel)
    q0 = w0 / (np.abs(w0).reshape(-1, w0.shape[-1]).max(0) / 127)
    assert np.max(np.abs(q0 - np.round(q0))) > 0.1


def test_progress_manifest_and_cache(compressed, tmp_path_factory) -> None:
    notes = compressed["notes"]
    for kind, epochs in (("prune", 4), ("distill", 8), ("qat", 1)):
        lines = [n for n in notes if f"{kind} epoch" in n]
        assert len(lines) == epochs and "loss" in lines[-1] and "accuracy" in lines[-1], lines
    for name in PROFILES[1:]:
        m = compressed["results"][name].manifest
        assert m["data"]["train"]["spec"] == "example:train" and m["data"]["train"]["samples"] == 4000
        assert (compressed["results"][name].directory / m["transform"]["model"]["file"]).is_file()
        assert m["transform"]["float_accuracy"]["transformed"] > 0.95
    # unchanged inputs: no training the second time
    again = build(compressed["request"])
    assert all(r.cached for r in again)


def test_build_key_holds_training_inputs(example_model) -> None:
    from edgeopt.inputs.data import example_split
    from edgeopt.inputs.model import open_model

    src = open_model(example_model)
    tgt = load_target("local")
    p = load_profile("pruned-int8")
    train = example_split("train")
    base = build_key(src, tgt, p, None, None, train)
    assert build_key(src, tgt, p.model_copy(update={"seed": 1}), None, None, train) != base
    assert build_key(src, tgt, p, None, None, example_split("calibration")) != base
    changed = p.model_copy(update={"prune": p.prune.model_copy(update={"sparsity": 0.5})})
    assert build_key(src, tgt, changed, None, None, train) != base
    # a plain profile's key does not depend on training data
    i8 = load_profile("int8")
    assert build_key(src, tgt, i8, None, None) == build_key(src, tgt, i8, None, None, None)
    assert "prune" not in i8.build_facts() and "seed" not in i8.build_facts()


def test_pruning_is_deterministic_for_a_seed(example_model) -> None:
    from edgeopt.convert.prune import prune_model
    from edgeopt.inputs.data import example_split
    from edgeopt.inputs.model import open_model

    teacher = open_model(example_model).load().keras_model
    opts = load_profile("pruned-int8").prune.model_copy(update={"epochs": 1, "max_samples": 384, "batch_size": 64})
    data = example_split("train")
    a, _ = prune_model(teacher, data, opts, seed=3, note=lambda m: None)
    b, _ = prune_model(teacher, data, opts, seed=3, note=lambda m: None)
    c, _ = prune_model(teacher, data, opts, seed=4, note=lambda m: None)
    wa, wb, wc = a.get_weights(), b.get_weights(), c.get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb))
    assert not all(np.array_equal(x, y) for x, y in zip(wa, wc))


def test_a_separable_convs_pointwise_kernel_is_pruned_and_its_depthwise_kernel_kept() -> None:
    """Xception-style models hold their weights in SeparableConv2D layers: their pointwise kernels are pruned
    (TF-MOT's choice), the depthwise ones stay dense; before, such a model had "no kernel to prune"."""
    from edgeopt.convert.prune import prune_model
    from edgeopt.inputs.data import example_split
    from edgeopt.tf_env import quiet_tensorflow

    quiet_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(16, 3, activation="relu")(inp)
    x = keras.layers.SeparableConv2D(64, 3, activation="relu", name="sep")(x)  # pointwise 16 x 64 = 1,024 weights
    x = keras.layers.GlobalAveragePooling2D()(x)
    teacher = keras.Model(inp, keras.layers.Dense(10)(x))
    opts = load_profile("pruned-int8").prune.model_copy(update={"epochs": 1, "max_samples": 256, "batch_size": 64})
    model, facts = prune_model(teacher, example_split("train"), opts, seed=0, note=lambda m: None)
    sep = model.get_layer("sep")
    pointwise, depthwise = np.asarray(sep.pointwise_kernel.numpy()), np.asarray(sep.depthwise_kernel.numpy())
    assert np.mean(pointwise == 0) == pytest.approx(opts.sparsity, abs=0.01)
    assert np.mean(depthwise == 0) == 0.0
    assert list(facts["sparsity"]["layers"]) == ["sep"]  # the 3x3x1x16 conv and the 64x10 dense are too small


# -- bad settings ---------------------------------------------------------------------------------------------
def _profile_file(tmp_path: Path, text: str) -> str:
    f = tmp_path / "p.yaml"
    f.write_text("tflite: {optimizations: [default], representative_dataset: true}\n" + text)
    return str(f)


@pytest.mark.parametrize("text, field, words", [
    ("prune: {sparsity: 1.0}", "prune.sparsity", "less than 1"),
    ("prune: {sparsity: 1.5}", "prune.sparsity", "less than 1"),
    ("prune: {sparsity: -0.1}", "prune.sparsity", "greater than or equal to 0"),
    ("prune: {epochs: 2}", "prune.sparsity", "required field is missing"),
    ("distill: {width_multiplier: 1.0}", "distill.width_multiplier", "less than 1"),
    ("distill: {width_multiplier: 2}", "distill.width_multiplier", "less than 1"),
    ("distill: {temperature: 2}", "distill", "exactly one of width_multiplier"),
    ("distill: {width_multiplier: 0.5, alpha: 1.5}", "distill.alpha", "less than or equal to 1"),
    ("qat: {epochs: 0}", "qat.epochs", "greater than or equal to 1"),
    ("prune: {sparsity: 0.5}\nqat: {}", "(top level)", "one training transform per profile"),
    ("prune: {sparsty: 0.5}", "prune.sparsty", "did you mean 'sparsity'"),
])
def test_bad_settings_are_one_line_config_errors(tmp_path: Path, text: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_profile(_profile_file(tmp_path, text))
    line = e.value.one_line()
    assert "\n" not in line and "p.yaml" in line and field in line and words in line, line


def test_no_training_data_fails_before_any_work(example_model, tmp_path: Path) -> None:
    req = BuildRequest(target=load_target("local"), profiles=[load_profile("pruned-int8")],
                       model=str(example_model), data="example:calibration", eval="example:eval", out=tmp_path)
    with pytest.raises(DataError) as e:
        build(req)
    assert "no training data" in e.value.one_line() and "--train" in e.value.one_line()
    assert not any(tmp_path.iterdir())


def test_training_profile_needs_a_keras_model(tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not looked at: the check comes before the model is read")
    req = BuildRequest(target=load_target("local"), profiles=[load_profile("qat-int8")], model=str(onnx),
                       data="example:calibration", train="example:train", out=tmp_path)
    with pytest.raises(ConversionError) as e:
        build(req)
    assert "needs a Keras model" in e.value.one_line()


def test_student_larger_than_teacher_is_refused(example_model, tmp_path: Path) -> None:
    from edgeopt.inputs.example_model import build_example_architecture

    big = tmp_path / "big.keras"
    build_example_architecture(width=24).save(big)
    prof = _profile_file(tmp_path, f"distill: {{student: {big}}}\n")
    req = BuildRequest(target=load_target("local"), profiles=[load_profile(prof)], out=tmp_path / "out")
    with pytest.raises(ConfigError) as e:
        build(req)
    line = e.value.one_line()
    assert "student" in line and "not fewer than the teacher's" in line and "width_multiplier below 1" in line
    assert not (tmp_path / "out" / "local" / "p").exists()


def test_missing_student_file_and_bad_training_data(example_model, tmp_path: Path) -> None:
    prof = _profile_file(tmp_path, "distill: {student: nowhere.keras}\n")
    with pytest.raises(EdgeoptError) as e:
        build(BuildRequest(target=load_target("local"), profiles=[load_profile(prof)], out=tmp_path))
    assert "nowhere.keras: no such file" in e.value.one_line()
    bad = tmp_path / "train.npz"
    np.savez(bad, x=np.zeros((10, 8, 8, 1), np.float32), y=np.zeros(10))
    with pytest.raises(DataError) as e:
        build(BuildRequest(target=load_target("local"), profiles=[load_profile("qat-int8")], train=str(bad),
                           out=tmp_path))
    assert "training data" in e.value.one_line() and "(8, 8, 1)" in e.value.one_line()


def test_a_re_trained_model_that_collapsed_is_refused_before_conversion(example_model, tmp_path: Path) -> None:
    """A student whose hidden layer never fires (zero kernel, bias -1, ReLU: no gradient reaches it) can only learn
    its last bias: every output is the same for any input. Seen with a random-weight teacher's student, which got
    as far as XNNPACK's "failed to prepare"; the build now stops after training, naming the profile."""
    from edgeopt.errors import ModelError
    from edgeopt.tf_env import quiet_tensorflow

    quiet_tensorflow()
    import keras

    inp = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Flatten()(inp)
    x = keras.layers.Dense(32, activation="relu", kernel_initializer="zeros",
                           bias_initializer=keras.initializers.Constant(-1.0))(x)
    student = tmp_path / "dead-student.keras"
    keras.Model(inp, keras.layers.Dense(10, name="logits")(x)).save(student)
    prof = _profile_file(tmp_path, f"distill: {{student: {student}, epochs: 1}}\n")
    out = tmp_path / "out"
    with pytest.raises(ModelError) as e:
        build(BuildRequest(target=load_target("local"), profiles=[load_profile(prof)], out=out))
    line = e.value.one_line()
    assert line.startswith("p: every output of the re-trained model (logits) is the same for all 1000 eval samples")
    assert "training collapsed it" in line and "learning_rate" in line
    assert not (out / "local" / "p").exists()  # nothing left where an artifact would be
