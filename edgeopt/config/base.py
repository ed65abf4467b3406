"""The strict base of every config model and the loading of YAML files into them.

Targets and profiles are looked up by name in ``$EDGEOPT_CONFIG_DIR/<kind>``, ``./<kind>`` and the data shipped
in the package (:func:`edgeopt.paths.shipped`). Every error names the file, the field and what is allowed; an
unknown name suggests the closest one.
"""

from __future__ import annotations

import difflib
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from edgeopt.errors import ConfigError
from edgeopt.paths import shipped


class StrictModel(BaseModel):
    """Unknown fields are errors; loaded configs are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def config_dirs(kind: str) -> list[Path]:
    """Where ``targets``/``profiles`` are looked up: $EDGEOPT_CONFIG_DIR, ./<kind>, the shipped ones."""
    dirs: list[Path] = []
    env = os.environ.get("EDGEOPT_CONFIG_DIR")
    if env:
        dirs.append(Path(env) / kind)
    dirs.append(Path.cwd() / kind)
    dirs.append(shipped(kind))
    seen: list[Path] = []
    for d in dirs:
        r = d.resolve()
        if r not in seen:
            seen.append(r)
    return seen


def available(kind: str) -> dict[str, Path]:
    """name -> file, earlier directories winning."""
    found: dict[str, Path] = {}
    for d in config_dirs(kind):
        if d.is_dir():
            for p in sorted(d.glob("*.yaml")):
                found.setdefault(p.stem, p)
    return found


M = TypeVar("M", bound=BaseModel)


def format_validation(path: Path, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "literal_error" and "expected" in err.get("ctx", {}):
            msg = f"got {err.get('input')!r}; allowed: {err['ctx']['expected']}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        parts.append(f"{field}: {msg}")
    return f"{path}: " + "; ".join(parts)


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The config model a field holds: itself, inside ``X | None``, or the items of ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_model(arg)
        if found is not None:
            return found
    return None


def _allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The fields a user may write where the unknown field at ``loc`` stands (list indexes are skipped)."""
    cur: type[BaseModel] | None = model
    for part in loc[:-1]:
        if isinstance(part, int) or str(part).isdigit():
            continue
        field = cur.model_fields.get(str(part)) if cur is not None else None
        cur = _section_model(field.annotation) if field is not None else None
        if cur is None:
            return []
    return sorted(f for f in cur.model_fields if f != "source_file") if cur is not None else []


def load_model_file(path: Path, model: type[M]) -> M:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level")
    raw.setdefault("name", path.stem)
    raw["source_file"] = str(path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        hint = None
        for err in exc.errors():
            if err["type"] == "extra_forbidden":
                allowed = _allowed_fields(model, tuple(err["loc"]))
                close = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed fields: {', '.join(allowed)}"
                break
        raise ConfigError(format_validation(path, exc), hint) from exc


def resolve(kind: str, name_or_path: str, model: type[M]) -> M:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return load_model_file(candidate, model)
    names = available(kind)
    if name_or_path in names:
        return load_model_file(names[name_or_path], model)
    close = difflib.get_close_matches(name_or_path, list(names), n=1, cutoff=0.5)
    singular = kind.rstrip("s")
    hint = f"did you mean '{close[0]}'?" if close else f"see `edgeopt {kind}`"
    known = ", ".join(sorted(names)) or "none"
    raise ConfigError(f"unknown {singular} '{name_or_path}' (known: {known})", hint)
