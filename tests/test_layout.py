"""The package layout holds: no import cycles between any two modules, no private name imported across
modules, no module over ~400 lines unless its docstring says why it is one cohesive thing.

The layers and independence contracts themselves are import-linter's (pyproject.toml, run by scripts/check.sh);
these are the rules it does not express. Imports inside functions count: grimp reads every import statement.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[1] / "edgeopt"
MAX_LINES = 400
COHESIVE = "Cohesive:"  # a longer module says why in its docstring, after this word


def import_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph("edgeopt")
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 50  # the whole package was read
    assert cycles(graph) == []


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_imports(source: str, me: str, is_package: bool = False) -> list[str]:
    """``from edgeopt.x import _name`` (or a relative one) in module ``me`` where x is another module."""
    package = me if is_package else me.rpartition(".")[0]
    bad = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")
            base = base[:len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        if not origin.startswith("edgeopt") or origin == me:
            continue
        bad += [f"{me}:{node.lineno} imports {a.name} from {origin}" for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")]
    return bad


def test_the_private_import_finder_finds_them() -> None:
    src = "from edgeopt.bench.worker import _hidden, visible\nfrom .options import _split\nfrom . import __version__\n"
    assert private_imports(src, "edgeopt.bench.plan") == [
        "edgeopt.bench.plan:1 imports _hidden from edgeopt.bench.worker",
        "edgeopt.bench.plan:2 imports _split from edgeopt.bench.options"]
    assert private_imports("from edgeopt.bench.plan import _own\n", "edgeopt.bench.plan") == []


def test_no_private_names_imported_across_modules() -> None:
    bad = [b for p in modules() for b in private_imports(p.read_text(encoding="utf-8"), module_name(p),
                                                        p.name == "__init__.py")]
    tests = Path(__file__).resolve().parent
    bad += [b for p in sorted(tests.glob("*.py")) for b in private_imports(p.read_text(encoding="utf-8"),
                                                                            f"tests.{p.stem}")]
    assert bad == []


def test_modules_stay_small_or_say_why() -> None:
    long = []
    for path in modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if COHESIVE not in doc:
            long.append(f"{path.relative_to(PACKAGE.parent)}: {lines} lines")
    assert long == []
