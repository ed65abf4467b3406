"""Calibration/eval data sources and their checks against the model input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgeopt.errors import DataError
from edgeopt.inputs.data import check_against_model, example_split, load_dataset


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
    np.savez(tmp_path / "nox.npz", inputs=np.zeros((3, 2)))
    with pytest.raises(DataError, match="no array named 'x'.*found: inputs"):
        load_dataset(str(tmp_path / "nox.npz"))
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(str(tmp_path / "corrupt.npz"))
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "ylen.npz", x=np.zeros((3, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match="4 labels but x has 3 samples"):
        load_dataset(str(tmp_path / "ylen.npz"))
    with pytest.raises(DataError, match="cannot import"):
        load_dataset("no_such_module_xyz:fn")


def test_checks_against_model_input() -> None:
    d = example_split("calibration")
    assert check_against_model(d, (28, 28, 1), "float32", "calibration", 16) is d
    assert check_against_model(d, (None, 28, 1), "float32", "calibration").x.shape == (200, 28, 28, 1)
    with pytest.raises(DataError, match=r"shape \(28, 28, 1\) but the model input expects \(8, 8, 1\)"):
        check_against_model(d, (8, 8, 1), "float32", "calibration")
    ints = type(d)((d.x * 255).astype(np.uint8), d.y, "u8.npz", d.sha256)
    with pytest.raises(DataError) as e:
        check_against_model(ints, (28, 28, 1), "float32", "calibration")
    assert "dtype uint8 but the model input is float32" in e.value.one_line()
    assert "astype('float32') / 255" in e.value.one_line()
    with pytest.raises(DataError, match="5 samples, at least 16 needed"):
        check_against_model(d.head(5), (28, 28, 1), "float32", "calibration", min_samples=16)


def test_example_split_is_fixed_and_disjoint() -> None:
    tr, ev = example_split("train"), example_split("eval")
    assert len(tr) == 4000 and len(ev) == 1000
    assert tr.x.dtype == np.float32 and 0.0 <= tr.x.min() and tr.x.max() <= 1.0
    assert np.bincount(ev.y, minlength=10).min() > 50
    # no held-out digit appears in the training split
    train_rows = {row.tobytes() for row in tr.x.reshape(len(tr), -1)}
    assert not any(row.tobytes() in train_rows for row in ev.x.reshape(len(ev), -1))
    assert example_split("eval").sha256 == ev.sha256
