"""The example trainer's progress relay and the one SavedModel export a source's conversions share."""

from __future__ import annotations

import gc
import math
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from edgeopt.inputs.example_model import DONE, relay


def _lines(delay: float) -> Iterator[str]:
    for i in range(1, 4):
        time.sleep(delay)
        yield f"epoch {i}/3: loss 0.1\n"
    yield "\n"
    yield f"{DONE}12.50 s\n"


def test_relay_holds_the_trainers_lines_while_the_warm_up_runs_then_lets_them_out_in_order() -> None:
    done = threading.Event()

    def warm_up() -> None:
        time.sleep(0.25)
        done.set()

    warm = threading.Thread(target=warm_up)
    seen: list[tuple[str, bool]] = []
    warm.start()
    seconds = relay(_lines(0.1), warm, lambda line: seen.append((line, done.is_set())))
    assert seconds == 12.5
    assert [line for line, _ in seen] == ["epoch 1/3: loss 0.1", "epoch 2/3: loss 0.1", "epoch 3/3: loss 0.1",
                                          "example model trained in 12.50 s"]
    assert all(finished for _, finished in seen)  # nothing reached progress while the warm-up could silence fd 2


def test_relay_without_a_warm_up_passes_each_line_on_at_once() -> None:
    read: list[str] = []

    def lines() -> Iterator[str]:
        for line in _lines(0.0):
            read.append(line)
            yield line

    got: list[tuple[str, int]] = []
    seconds = relay(lines(), None, lambda line: got.append((line, len(read))))
    assert seconds == 12.5
    # each line went out before the next one was read (the empty line is dropped)
    assert [n for _, n in got] == [1, 2, 3, 5]
    assert math.isnan(relay(iter(["a crash\n"]), None, lambda line: None))  # no "trained in": no figure


def test_relay_lets_held_lines_out_when_the_trainer_ends_before_the_warm_up() -> None:
    warm = threading.Thread(target=time.sleep, args=(0.3,))
    seen: list[str] = []
    warm.start()
    assert relay(_lines(0.0), warm, seen.append) == 12.5
    assert not warm.is_alive() and len(seen) == 4


@pytest.mark.slow
def test_a_sources_tflite_conversions_share_one_export_removed_with_the_source(example_model: Path) -> None:
    from edgeopt.convert.tflite import exported
    from edgeopt.inputs.model import open_model

    src = open_model(str(example_model))
    src.load()
    first = exported(src, static_batch=True)
    assert (first / "saved_model.pb").is_file()
    assert exported(src, static_batch=True) == first  # the second conversion reads the same files
    dynamic = exported(src, static_batch=False)
    assert dynamic != first and (dynamic / "saved_model.pb").is_file()
    del src
    gc.collect()
    assert not first.exists() and not dynamic.exists()
