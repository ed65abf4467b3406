"""Several inputs and outputs: data with one array per input name, checked against every model input; models of
all three source kinds report every input and output and run them (real ONNX Runtime / TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from edgeopt.errors import DataError
from edgeopt.inputs.data import check_against_model, load_dataset
from edgeopt.inputs.model import open_model
from edgeopt.inputs.tensors import TensorSpec


def audio_model(path: Path) -> Path:
    """audio [N, 16] float and sr an int64 scalar -> y = audio * sr [N, 16] and s = sum(y) (a scalar)."""
    g = h.make_graph(
        [h.make_node("Cast", ["sr"], ["srf"], to=T.FLOAT), h.make_node("Mul", ["audio", "srf"], ["y"]),
         h.make_node("ReduceSum", ["y"], ["s"], keepdims=0)], "audio",
        [h.make_tensor_value_info("audio", T.FLOAT, ["N", 16]), h.make_tensor_value_info("sr", T.INT64, [])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 16]), h.make_tensor_value_info("s", T.FLOAT, [])])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_onnx_model_reports_and_runs_every_input_and_output(tmp_path: Path) -> None:
    src = open_model(audio_model(tmp_path / "a.onnx")).load()
    assert src.inputs == [TensorSpec("audio", (None, 16), "float32"), TensorSpec("sr", (), "int64")]
    assert [t.name for t in src.outputs] == ["y", "s"] and not src.single_io
    audio = np.random.default_rng(0).random((5, 16), dtype=np.float32)
    sr = np.array([1, 2, 3, 4, 5], np.int64)
    y, s = src.predict_all({"audio": audio, "sr": sr})
    np.testing.assert_allclose(y, audio * sr[:, None], rtol=1e-6)
    np.testing.assert_allclose(s, (audio * sr[:, None]).sum(1), rtol=1e-5)
    assert src.describe()["inputs"][1] == {"name": "sr", "shape": [], "dtype": "int64"}


def test_npz_with_one_array_per_input_is_checked_and_cast(tmp_path: Path) -> None:
    src = open_model(audio_model(tmp_path / "a.onnx")).load()
    np.savez(tmp_path / "d.npz", audio=np.ones((4, 16), np.float64), sr=np.array([8000, 16000, 8000, 16000]))
    data = check_against_model(load_dataset(str(tmp_path / "d.npz")), src.inputs, "calibration")
    assert list(data.inputs) == ["audio", "sr"] and data.inputs["audio"].dtype == np.float32
    assert data.inputs["sr"].dtype == np.int64 and len(data) == 4
    assert data.describe()["inputs"]["sr"] == {"shape": [], "dtype": "int64"}
    assert len(data.head(2).inputs["sr"]) == 2


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x": np.ones((4, 16), np.float32)}, "one array 'x' but the model has 2 inputs (audio, sr)"),
    ({"audio": np.ones((4, 16), np.float32)}, "no array for model input 'sr' (found: audio"),
    ({"audio": np.ones((4, 16), np.float32), "sr": np.ones(4, np.int64), "rate": np.ones(4)},
     "array 'rate' matches no model input"),
    ({"audio": np.ones((4, 15), np.float32), "sr": np.ones(4, np.int64)},
     "input 'audio': each sample has shape (15,) but the model input expects (16)"),
    ({"audio": np.ones((4, 16), np.float32), "sr": np.ones(4, np.float32)},
     "input 'sr': float data but the model input is int64"),
    ({"audio": np.ones((4, 16), np.float32), "sr": np.ones(3, np.int64)}, "sr has 3 samples but audio has 4"),
])
def test_bad_multi_input_data_is_one_clear_line(tmp_path: Path, arrays: dict, message: str) -> None:
    src = open_model(audio_model(tmp_path / "a.onnx")).load()
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError) as err:
        check_against_model(load_dataset(str(tmp_path / "d.npz")), src.inputs, "calibration")
    assert message in str(err.value) and "\n" not in err.value.one_line()


def test_keras_model_with_two_inputs_and_two_outputs(tmp_path: Path) -> None:
    from edgeopt.tf_env import quiet_tensorflow

    quiet_tensorflow()
    import keras

    a, b = keras.Input((6,), name="feat"), keras.Input((3,), name="ctx")
    joined = keras.layers.Concatenate()([a, b])
    model = keras.Model([a, b], [keras.layers.Dense(4, name="cls")(joined), keras.layers.Dense(2, name="box")(joined)])
    model.save(tmp_path / "m.keras")
    src = open_model(tmp_path / "m.keras").load()
    assert [t.name for t in src.inputs] == ["feat", "ctx"] and [t.name for t in src.outputs] == ["cls", "box"]
    rng = np.random.default_rng(1)
    feeds = {"feat": rng.random((7, 6), dtype=np.float32), "ctx": rng.random((7, 3), dtype=np.float32)}
    cls, box = src.predict_all(feeds)
    want = model([feeds["feat"], feeds["ctx"]])
    np.testing.assert_allclose(cls, want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(box, want[1], rtol=1e-5, atol=1e-6)
