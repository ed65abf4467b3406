"""The build pipeline's side of the training transforms (prune / distill / QAT in ``edgeopt/convert/``):
checks before any work, what the cache key depends on, and the transform step itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from edgeopt.errors import DataError, ModelError
from edgeopt.inputs.data import Dataset

Note = Callable[[str], None]
TRANSFORM_FILE = "trained.keras"


def student_path(profile: Any) -> Path | None:
    """The distillation student file: as given (relative to the working directory), else next to the profile."""
    if profile.distill is None or profile.distill.student is None:
        return None
    path = Path(profile.distill.student).expanduser()
    if not path.is_absolute() and not path.exists() and profile.source_file:
        beside = Path(profile.source_file).parent / path
        if beside.exists():
            return beside
    return path


def check_request(profiles: list[Any], src: Any, train_spec: str | None) -> None:
    """Everything about a training profile that can be wrong, found before data is read or TensorFlow imported."""
    from edgeopt.errors import ConversionError
    from edgeopt.inputs.model import open_model

    for profile in profiles:
        if not profile.needs_training:
            continue
        what = f"profile {profile.name} ({profile.transforms[0]})"
        if src.kind != "keras":
            raise ConversionError(f"{what} fine-tunes the model, which needs a Keras model; {src.path} is a "
                                  f"{src.kind} model", "give the .keras/.h5 file the model was saved as")
        if train_spec is None:
            raise DataError(f"{what} trains the model and no training data was given",
                            "pass --train train.npz (x: inputs as the model takes them, y: class labels)")
        student = student_path(profile)
        if student is not None:
            if not student.exists():
                raise ModelError(f"{what}: distill.student {profile.distill.student}: no such file",
                                 "give the path of a .keras student model (relative to the working directory or "
                                 "the profile file)")
            open_model(student)  # its format and that it is not empty


def transform_facts(profile: Any, train: Dataset | None) -> dict[str, Any]:
    """What a training profile's output depends on beyond the profile's own fields (which the key holds)."""
    from edgeopt.artifacts.files import sha256_tree

    student = student_path(profile)
    return {"train": train.sha256 if train is not None else None,
            "student": sha256_tree(student) if student is not None and student.exists() else None,
            "recipe": TRANSFORM_RECIPE}


TRANSFORM_RECIPE = 1  # bump when a transform's algorithm changes what it produces


def run_transform(src: Any, profile: Any, train: Dataset, evalset: Dataset | None, stage: Path, note: Note
                  ) -> tuple[Any, dict[str, Any]]:
    """Prune / distill / QAT the source Keras model; the result is saved as ``trained.keras`` in the artifact
    directory and returned as a SourceModel for the conversion passes, with the manifest's ``transform`` record."""
    from edgeopt.artifacts.files import sha256_file
    from edgeopt.inputs.model import open_model

    kind = profile.transforms[0]
    teacher = src.load().keras_model
    label = f"{profile.name}: "
    say: Note = lambda message: note(label + message)  # noqa: E731
    if kind == "prune":
        from edgeopt.convert.prune import prune_model

        model, info = prune_model(teacher, train, profile.prune, seed=profile.seed, note=say, evalset=evalset)
    elif kind == "distill":
        from edgeopt.convert.distill import distill_model

        base = Path(profile.source_file).parent if profile.source_file else None
        opts = profile.distill
        student = student_path(profile)
        if student is not None:
            opts = opts.model_copy(update={"student": str(student)})
        model, info = distill_model(teacher, train, opts, seed=profile.seed, note=say, evalset=evalset,
                                    base_dir=base)
    else:
        from edgeopt.convert.qat import qat_model

        model, info = qat_model(teacher, train, profile.qat, seed=profile.seed, note=say, evalset=evalset)
    out = stage / TRANSFORM_FILE
    model.save(out)
    info["model"] = {"file": TRANSFORM_FILE, "sha256": sha256_file(out), "bytes": out.stat().st_size}
    info["train"] = train.describe()
    trained = open_model(out)
    trained.load()
    return trained, info
