"""Minimal "device" virtualenvs: what the agent sees on a real device (no tensorflow, no edgeopt).

Each env is created once with ``python -m venv`` + pip and cached under
``<cache>/device-envs/<name>-<hash of python version + requirements>``; a healthy env (marker file present,
python runs, its imports work) is reused. Cache root: ``$EDGEOPT_TEST_CACHE`` or ``~/.cache/edgeopt-test``.

    litert  numpy 2 + ai-edge-litert (the maintained TFLite runtime)
    rpios   like Raspberry Pi OS: numpy<2 + tflite-runtime 2.14.0 + onnxruntime (works with numpy 1.x)
    litert-ort  numpy 2 + ai-edge-litert + onnxruntime (a Pi set up for current models: both formats)
    bare    numpy only: no runtime at all
    empty   not even numpy (a fresh ``python -m venv``)
    numpy2-tflrt  tflite-runtime 2.14.0 beside numpy 2: imports, but cannot run (the FACTS.md trap)
    py39    optional, when a Python 3.9 interpreter exists: numpy<2 + tflite-runtime + onnxruntime 1.19.2
            (proves the agent runs on the oldest Python it promises)
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from agent_models import cache_root, file_lock

MARKER = ".edgeopt-device-env.json"


@dataclass(frozen=True)
class EnvSpec:
    name: str
    requirements: tuple[str, ...]
    imports: tuple[str, ...]  # must import in the finished env (the health check)
    python: str | None = None  # a base interpreter; None: the one running the tests


ENVS: dict[str, EnvSpec] = {
    "litert": EnvSpec("litert", ("numpy>=2", "ai-edge-litert==2.3.0"), ("numpy", "ai_edge_litert.interpreter")),
    "rpios": EnvSpec("rpios", ("numpy<2", "tflite-runtime==2.14.0", "onnxruntime==1.32.0"),
                     ("numpy", "tflite_runtime.interpreter", "onnxruntime")),
    "bare": EnvSpec("bare", ("numpy",), ("numpy",)),
    "litert-ort": EnvSpec("litert-ort", ("numpy>=2", "ai-edge-litert==2.3.0", "onnxruntime==1.32.0"),
                          ("numpy", "ai_edge_litert.interpreter", "onnxruntime")),
    "empty": EnvSpec("empty", (), ("json",)),
    "numpy2-tflrt": EnvSpec("numpy2-tflrt", ("numpy>=2", "tflite-runtime==2.14.0"), ("numpy",)),
    "py39": EnvSpec("py39", ("numpy<2", "tflite-runtime==2.14.0", "onnxruntime==1.19.2"),
                    ("numpy", "tflite_runtime.interpreter", "onnxruntime"), python="3.9"),
}


def base_python() -> str:
    """The interpreter the test venv was made from (tests usually run inside a venv)."""
    for candidate in (Path(sys.base_prefix) / "bin" / "python3", Path(sys.base_prefix) / "bin" / "python"):
        if candidate.exists():
            return str(candidate)
    return shutil.which("python3") or sys.executable


def find_python(version: str) -> str | None:
    """A real (not pyenv-shim) interpreter for ``version`` such as "3.9", or None."""
    names = ["/usr/bin/python%s" % version, "/usr/local/bin/python%s" % version]
    names += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/%s.*/bin/python%s" % (version, version))))
    found = shutil.which("python%s" % version)
    if found:
        names.append(found)
    for name in names:
        if os.path.exists(name):
            try:
                out = subprocess.run([name, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                     capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.SubprocessError):
                continue
            if out.returncode == 0 and out.stdout.strip() == version:
                return name
    return None


@dataclass(frozen=True)
class DeviceEnv:
    name: str
    root: Path

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    def run(self, args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run this env's python with a clean environment (no PYTHONPATH, nothing from the host venv)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "PYTEST_CURRENT_TEST")}
        env["PATH"] = str(self.root / "bin") + os.pathsep + "/usr/bin:/bin"
        return subprocess.run([self.python, *args], cwd=str(cwd), env=env, capture_output=True, text=True,
                              timeout=timeout)


def _key(spec: EnvSpec, python: str) -> str:
    version = subprocess.run([python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True,
                             check=True).stdout.strip()
    text = json.dumps({"python": version, "requirements": sorted(spec.requirements)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _healthy(env: DeviceEnv, spec: EnvSpec) -> bool:
    if not (env.root / MARKER).is_file() or not Path(env.python).exists():
        return False
    code = "import %s" % ", ".join(spec.imports)
    try:
        return env.run(["-c", code], cwd=env.root, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class EnvUnavailable(RuntimeError):
    """The env cannot exist on this machine (e.g. no Python 3.9): tests skip."""


def ensure_env(name: str) -> DeviceEnv:
    """The cached env ``name``, created first when missing or unhealthy (pip needs the package index)."""
    spec = ENVS[name]
    python = base_python() if spec.python is None else find_python(spec.python)
    if python is None:
        raise EnvUnavailable("no Python %s interpreter on this machine" % spec.python)
    env = DeviceEnv(name, cache_root() / "device-envs" / ("%s-%s" % (name, _key(spec, python))))
    if _healthy(env, spec):
        return env
    with file_lock(env.root.parent / (env.root.name + ".lock")):
        if _healthy(env, spec):
            return env
        if env.root.exists():
            shutil.rmtree(env.root)
        try:
            subprocess.run([python, "-m", "venv", str(env.root)], check=True, capture_output=True, text=True,
                           timeout=300)
            pip = env.run(["-m", "pip", "install", "--no-input", "--disable-pip-version-check", "-q",
                           *spec.requirements], cwd=env.root.parent, timeout=1200) if spec.requirements else None
            if pip is not None and pip.returncode != 0:
                raise RuntimeError("pip install %s failed in %s:\n%s" % (" ".join(spec.requirements), env.root,
                                                                       (pip.stdout + pip.stderr)[-4000:]))
            freeze = env.run(["-m", "pip", "freeze"], cwd=env.root.parent)
            (env.root / MARKER).write_text(json.dumps({"name": name, "python": python,
                                                       "requirements": list(spec.requirements),
                                                       "freeze": freeze.stdout.split()}, indent=2))
        except BaseException:
            shutil.rmtree(env.root, ignore_errors=True)
            raise
        if not _healthy(env, spec):
            raise RuntimeError("device env %s at %s cannot import %s after installing" % (name, env.root, spec.imports))
    return env
