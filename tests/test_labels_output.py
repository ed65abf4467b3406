"""The device's accuracy is taken on the output the build's was: a TFLite signature sorts its outputs by name, so
output 0 of the artifact may not be the classifier (a model with ``z_logits`` and ``a_feat`` gave accuracy 0.0 on
the device for a correct TFLite artifact). The build records ``labels_output_<fmt>`` in reference.npz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.cli import main

pytestmark = pytest.mark.slow


def test_device_accuracy_uses_the_classifier_output_whatever_its_place(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z_logits"]), helper.make_node("MatMul", ["x", "v"], ["f"]),
         helper.make_node("Reshape", ["f", "shape"], ["a_feat"])], "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("a_feat", TensorProto.FLOAT, ["N", 4, 2]),  # output 0 is no classifier
         helper.make_tensor_value_info("z_logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(rng.normal(size=(8, 10)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "v"),
         numpy_helper.from_array(np.array([-1, 4, 2], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, tmp_path / "two.onnx")
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x @ numpy_helper.to_array(graph.initializer[0])).argmax(1)  # the float model is right on every sample
    np.savez(tmp_path / "eval.npz", x=x, y=y)
    out = tmp_path / "art"
    assert main(["build", str(tmp_path / "two.onnx"), "-p", "fp32", "--data", str(tmp_path / "eval.npz"),
                 "--eval", str(tmp_path / "eval.npz"), "--out", str(out)]) == 0
    with np.load(out / "local" / "fp32" / "reference.npz") as ref:
        for fmt in ("tflite", "onnx"):  # the index of z_logits among the artifact's outputs
            assert ref[f"y_float_{fmt}:{int(ref[f'labels_output_{fmt}'])}"].shape[1:] == (10,), fmt
    capsys.readouterr()
    assert main(["bench", "--target", "local", "--artifacts", str(out), "--results", str(tmp_path / "res"),
                 "--runs", "5", "--warmup", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_format = {r["format"]: r["agent"]["parity"] for r in doc["results"]}
    for fmt, parity in by_format.items():
        assert parity["accuracy"] == 1.0, (fmt, parity)  # output 0 (a_feat) gave a number that meant nothing
