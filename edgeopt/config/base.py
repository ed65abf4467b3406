"""The strict base of every config model and the loading of YAML files into them.

Targets and profiles are looked up by name in ``$EDGEOPT_CONFIG_DIR/<kind>``, ``./<kind>`` and the data shipped
in the package (:func:`edgeopt.paths.shipped`). Every error names the file, the field and what is allowed; an
unknown name suggests the closest one.
"""

from __future__ import annotations

import difflib
import os
import reprlib
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from edgeopt.errors import ConfigError
from edgeopt.paths import shipped

MAX_CONFIG_BYTES = 1 << 20  # a target/profile/lab file is a few hundred bytes; more is not a config file
MAX_ERRORS_SHOWN = 4


class StrictModel(BaseModel):
    """Unknown fields are errors; loaded configs are immutable; NaN and ±Inf are no numbers a config can use."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def config_dirs(kind: str) -> list[Path]:
    """Where ``targets``/``profiles`` are looked up: $EDGEOPT_CONFIG_DIR, ./<kind>, the shipped ones."""
    dirs: list[Path] = []
    env = os.environ.get("EDGEOPT_CONFIG_DIR")
    if env:
        if not Path(env).is_dir():
            raise ConfigError(f"EDGEOPT_CONFIG_DIR={env}: not a directory",
                              "point it at a directory holding targets/ and profiles/, or unset it")
        if (Path(env) / kind).exists() and not (Path(env) / kind).is_dir():
            raise ConfigError(f"EDGEOPT_CONFIG_DIR={env}: {kind} is not a directory",
                              f"make {Path(env) / kind} a directory of <name>.yaml files")
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


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently: a second
    ``gates:`` dropped the first block without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[typing.Any, typing.Any]:
        seen: set[typing.Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
        return super().construct_mapping(node, deep)


def format_validation(path: Path, exc: ValidationError) -> str:
    parts = []
    errors = exc.errors()
    for err in errors[:MAX_ERRORS_SHOWN]:
        field = ".".join(str(x) for x in err["loc"])[:80] or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "literal_error" and "expected" in err.get("ctx", {}):
            msg = f"got {_short(err.get('input'))}; allowed: {err['ctx']['expected']}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "finite_number":
            msg = "must be a finite number (not NaN or Inf)"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        parts.append(f"{field}: {_short(msg, 200, quote=False)}")
    if len(errors) > MAX_ERRORS_SHOWN:
        parts.append(f"and {len(errors) - MAX_ERRORS_SHOWN} more")
    return f"{path}: " + "; ".join(parts)


def _short(value: Any, limit: int = 60, quote: bool = True) -> str:
    """A value for a one-line message: repr'd (or not), whitespace folded, cut at ``limit`` characters."""
    text = reprlib.repr(value) if quote else str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_config_text(path: Path) -> str:
    """The file's text: refused (naming the file) when unreadable, huge, or not UTF-8."""
    try:
        if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes, too large for a config file "
                              f"(limit {MAX_CONFIG_BYTES:,})", "give the YAML file of a target, profile or lab")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                          "save the file as UTF-8") from exc


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
    text = read_config_text(path)
    try:
        raw = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({_short(getattr(exc, 'problem', exc), 200, False)})") \
            from exc
    except Exception as exc:  # noqa: BLE001 - PyYAML raises ValueError/RecursionError/... on some bad values
        raise ConfigError(f"{path}: invalid YAML ({type(exc).__name__}: {_short(exc, 200, False)})") from exc
    if raw is None:
        raise ConfigError(f"{path}: the file is empty", "write the fields of a target, profile or lab")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level (got {type(raw).__name__})")
    raw.setdefault("name", path.stem)
    raw["source_file"] = str(path)
    try:
        return model.model_validate(raw)
    except RecursionError as exc:
        raise ConfigError(f"{path}: values nested too deeply or referring to themselves") from exc
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
