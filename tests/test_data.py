"""Calibration/eval data sources and their checks against the model input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgeopt.errors import DataError
from edgeopt.inputs.data import check_against_model, example_split, load_dataset
from edgeopt.inputs.tensors import TensorSpec


def test_npz_folder_and_callable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).random((20, 4, 4, 1), dtype=np.float32)
    y = np.arange(20) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_dataset(str(tmp_path / "d.npz"))
    assert d.x.shape == (20, 4, 4, 1) and d.y is not None and (d.y == y).all()

    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(5):
        np.save(folder / f"{i:03d}.npy", x[i])
    f = load_dataset(str(folder))
    assert f.x.shape == (5, 4, 4, 1) and f.y is None and np.array_equal(f.x, x[:5])

    xy = tmp_path / "xy"
    xy.mkdir()
    np.save(xy / "x.npy", x)
    np.save(xy / "y.npy", np.eye(3)[y])  # one-hot labels become class indices
    g = load_dataset(str(xy))
    assert g.y is not None and (g.y == y).all()

    (tmp_path / "mydata.py").write_text(
        "import numpy as np\ndef calib():\n    return np.ones((7, 4, 4, 1), np.float32), np.zeros(7, int)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    c = load_dataset("mydata:calib")
    assert c.x.shape == (7, 4, 4, 1) and len(c.y) == 7
    sys.modules.pop("mydata", None)
    assert d.sha256 != f.sha256 and len(d.sha256) == 64


def test_bad_sources_are_clear(tmp_path: Path) -> None:
    np.savez(tmp_path / "onlyy.npz", y=np.zeros(3))
    with pytest.raises(DataError, match="onlyy.npz: no input arrays .found: y"):
        load_dataset(str(tmp_path / "onlyy.npz"))
    np.savez(tmp_path / "named.npz", inputs=np.zeros((3, 2)))  # named after a model input: checked against the model
    assert list(load_dataset(str(tmp_path / "named.npz")).inputs or {}) == ["inputs"]
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="corrupt.npz: not a valid .npz file"):
        load_dataset(str(tmp_path / "corrupt.npz"))
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "ylen.npz", x=np.zeros((3, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match="4 labels but x has 3 samples"):
        load_dataset(str(tmp_path / "ylen.npz"))
    np.savez(tmp_path / "ylen2.npz", image=np.zeros((3, 2)), y=np.zeros(4))  # named after the model's input
    with pytest.raises(DataError, match="4 labels but image has 3 samples") as info:
        load_dataset(str(tmp_path / "ylen2.npz"))
    assert "one label per sample" in info.value.one_line()
    np.savez(tmp_path / "yfrac.npz", x=np.zeros((3, 2)), y=np.array([0.5, 1, 2]))
    with pytest.raises(DataError, match="integer class labels") as info:
        load_dataset(str(tmp_path / "yfrac.npz"))
    assert "class indices" in info.value.one_line()
    with pytest.raises(DataError, match="cannot import"):
        load_dataset("no_such_module_xyz:fn")


def test_checks_against_model_input() -> None:
    d = example_split("calibration")
    assert check_against_model(d, [TensorSpec("x", (None, 28, 28, 1), "float32")], "calibration", 16).x is d.x
    assert check_against_model(d, [TensorSpec("x", (None, None, 28, 1), "float32")], "calibration").x.shape == (200, 28, 28, 1)
    with pytest.raises(DataError, match=r"shape \(28, 28, 1\) but the model input expects \(8, 8, 1\)"):
        check_against_model(d, [TensorSpec("x", (None, 8, 8, 1), "float32")], "calibration")
    ints = type(d)((d.x * 255).astype(np.uint8), d.y, "u8.npz", d.sha256)
    with pytest.raises(DataError) as e:
        check_against_model(ints, [TensorSpec("x", (None, 28, 28, 1), "float32")], "calibration")
    assert "dtype uint8 but the model input is float32" in e.value.one_line()
    assert "astype('float32') / 255" in e.value.one_line()
    with pytest.raises(DataError, match="5 samples, at least 16 needed"):
        check_against_model(d.head(5), [TensorSpec("x", (None, 28, 28, 1), "float32")], "calibration",
                            min_samples=16)


def test_example_split_is_fixed_and_disjoint() -> None:
    tr, ev = example_split("train"), example_split("eval")
    assert len(tr) == 4000 and len(ev) == 1000
    assert tr.x.dtype == np.float32 and 0.0 <= tr.x.min() and tr.x.max() <= 1.0
    assert np.bincount(ev.y, minlength=10).min() > 50
    # no held-out digit appears in the training split
    train_rows = {row.tobytes() for row in tr.x.reshape(len(tr), -1)}
    assert not any(row.tobytes() in train_rows for row in ev.x.reshape(len(ev), -1))
    assert example_split("eval").sha256 == ev.sha256


# -- issue 12: bad data never crashes or lies ---------------------------------------------------------------------
def test_non_finite_values_are_refused_naming_file_key_and_count(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((30, 4, 4, 1), dtype=np.float32)
    x[3, 0, 0, 0], x[3, 1, 0, 0], x[8, 2, 2, 0] = np.nan, np.inf, -np.inf
    np.savez(tmp_path / "calib.npz", x=x)
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path / "calib.npz"))
    line = e.value.one_line()
    assert str(tmp_path / "calib.npz") in line and "x holds 3 non-finite values (NaN: 1, Inf: 2)" in line
    assert "in 2 of 30 samples" in line and "--drop-non-finite" in line
    np.savez(tmp_path / "labels.npz", x=x[:2] * 0, y=np.array([1.0, np.nan]))
    with pytest.raises(DataError, match=r"labels.npz: y holds 1 non-finite value \(NaN: 1, Inf: 0\)"):
        load_dataset(str(tmp_path / "labels.npz"))
    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(5):
        np.save(folder / f"{i:03d}.npy", x[i + 1])  # x[3] is sample 002.npy
    with pytest.raises(DataError, match="first in 002.npy"):
        load_dataset(str(folder))


def test_drop_non_finite_drops_and_counts(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((30, 4), dtype=np.float32)
    x[3, 0], x[3, 1], x[8, 2] = np.nan, np.inf, -np.inf
    y = np.arange(30) % 3
    np.savez(tmp_path / "calib.npz", x=x, y=y)
    d = load_dataset(str(tmp_path / "calib.npz"), drop_non_finite=True)
    assert len(d) == 28 and np.isfinite(d.x).all() and list(d.y[:4]) == [0, 1, 2, 1]  # samples 3 and 8 gone
    assert d.describe()["dropped_non_finite"] == {"samples": 2, "values": 3}
    np.savez(tmp_path / "clean.npz", x=x[np.isfinite(x).all(axis=1)], y=y[np.isfinite(x).all(axis=1)])
    assert load_dataset(str(tmp_path / "clean.npz")).sha256 != d.sha256  # the drop is part of the cache key
    assert "dropped_non_finite" not in load_dataset(str(tmp_path / "clean.npz")).describe()
    np.savez(tmp_path / "all.npz", x=np.full((4, 2), np.nan))
    with pytest.raises(DataError, match="leaves no samples"):
        load_dataset(str(tmp_path / "all.npz"), drop_non_finite=True)


def test_corrupt_files_are_named_and_never_advise_pickle(tmp_path: Path) -> None:
    cases = {"random.npz": bytes(range(256)) * 4, "text.npz": b"hello world\n", "empty.npz": b"",
             "random.npy": bytes(range(256)), "empty.npy": b"", "text.npy": b"1 2 3\n"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError) as e:
            load_dataset(str(tmp_path / name))
        line = e.value.one_line()
        assert f"{name}: not a valid .{name.split('.')[1]} file" in line, line
        assert "pickle" not in line, line
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="array 'x': holds Python objects.*never loads pickled"):
        load_dataset(str(tmp_path / "objects.npz"))
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((100, 10), np.float32))
    (tmp_path / "cut.npy").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(DataError, match="cut.npy: truncated or corrupt"):
        load_dataset(str(tmp_path / "cut.npy"))


def test_data_function_failures_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "baddata.py").write_text(
        "def boom():\n    raise RuntimeError('no such table')\n"
        "def none():\n    return None\n"
        "def triple():\n    return 1, 2, 3\n"
        "def empty():\n    return ()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for fn, want in (("boom", "baddata:boom: the data function raised RuntimeError: no such table"),
                     ("none", "returned None"), ("triple", "tuple of 3 items"), ("empty", "tuple of 0 items")):
        with pytest.raises(DataError) as e:
            load_dataset(f"baddata:{fn}")
        assert want in e.value.one_line()
    sys.modules.pop("baddata", None)


def test_labels_are_checked_against_the_model_classes() -> None:
    from edgeopt.analyze.evaluate import compare
    from edgeopt.inputs.data import Dataset, check_labels

    x = np.zeros((4, 2), np.float32)
    for y, want in ((np.array([0, 1, 42, 3]), "1 of 4 labels are outside 0..9 (e.g. 42"),
                    (np.array([-1, 1, 2, 3]), "outside 0..9 (e.g. -1")):
        with pytest.raises(DataError) as e:
            check_labels(Dataset(x, y, "eval.npz", "0" * 64), (10,), "eval")
        assert want in e.value.one_line() and "eval data eval.npz" in e.value.one_line()
        assert "10 output classes" in e.value.one_line()
        with pytest.raises(DataError, match="10 output classes"):  # the metrics refuse them too
            compare(np.zeros((4, 10), np.float32), np.zeros((4, 10), np.float32), y)
    with pytest.raises(DataError, match="one-hot with 12 columns but the model has 10"):
        check_labels(Dataset(x, np.array([0, 1, 2, 3]), "e.npz", "0" * 64, one_hot_width=12), (10,), "eval")
    check_labels(Dataset(x, np.array([0, 9, 2, 3]), "e.npz", "0" * 64), (10,), "eval")  # fine
    check_labels(Dataset(x, np.array([0, 99]), "e.npz", "0" * 64), (None,), "eval")  # unknown width: the metrics check
    assert compare(np.eye(4, 10, dtype=np.float32), np.eye(4, 10, dtype=np.float32), np.arange(4))["accuracy"] == 1.0


def test_values_that_overflow_the_model_input_are_refused() -> None:
    d = example_split("calibration").head(20)
    big = type(d)(d.x.astype(np.float64) * 1e300, None, "big.npz", d.sha256)
    with pytest.raises(DataError, match="big.npz: .* values overflow the model input float32"):
        check_against_model(big, [TensorSpec("x", (None, 28, 28, 1), "float32")], "calibration")
    wide = type(d)((d.x * 1000).astype(np.int64), None, "wide.npz", d.sha256)
    with pytest.raises(DataError, match=r"wide.npz: values 0..1000 do not fit the model input int8"):
        check_against_model(wide, [TensorSpec("x", (None, 28, 28, 1), "int8")], "calibration")
