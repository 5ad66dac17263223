"""The package's shape, read from its source: no import circle inside llmnb, no module over 400
lines, no function over 50 lines, and a core that works without a notebook (no IPython,
ipywidgets, timeline or magics). The checker is tested first on a tiny package made for it, so a
real violation is known to fail the test."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmnb

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
# The core works in a plain script and a web server; these belong to the notebook.
CORE = ("model", "tools", "tool_loop", "structured", "events", "backends", "cache", "prices", "runs")
NOTEBOOK_ONLY = ("IPython", "ipywidgets", "llmnb.timeline", "llmnb.magics")

# KNOWN EXCEPTIONS: violations present today, each to be fixed in its own module and then taken
# off here. Nothing else may be added.
KNOWN_LONG_FUNCTIONS: set[str] = set()
KNOWN_LONG_MODULES: set[str] = set()
KNOWN_CIRCLES: list[set[str]] = []
KNOWN_CORE_IMPORTS: set[str] = set()


# -- the checker --------------------------------------------------------------------------------
def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package at `root`, by dotted name (a package by its own name)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join((package, *parts))] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, inside functions too, except those under `if TYPE_CHECKING:`
    (they never run)."""
    for node in ast.iter_child_nodes(tree):
        for child in node.orelse if isinstance(node, ast.If) and _type_checking(node) else [node]:
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            yield from imports(child)


def imported(name: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> Iterator[tuple[str, str]]:
    """What an import statement in module `name` names, as (dotted name, the module holding it
    when that name is no module): `from X import y` names X.y, a submodule or a name in X."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, alias.name
        return
    source = node.module or ""
    if node.level:
        parts = name.split(".")
        base = parts if is_package else parts[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    for alias in node.names:
        yield f"{source}.{alias.name}", source


def graph(root: Path, package: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Which package modules each module imports, and which names from outside it (all dotted)."""
    found = modules(root, package)
    inside: dict[str, set[str]] = {name: set() for name in found}
    outside: dict[str, set[str]] = {name: set() for name in found}
    for name, path in found.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in imports(tree):
            for target, holder in imported(name, path.name == "__init__.py", node):
                if target == package or target.startswith(package + "."):
                    known = target if target in found else _longest_module(holder, found)
                    if known and known != name:
                        inside[name].add(known)
                else:
                    outside[name].add(target if target == holder else holder)
    return inside, outside


def _longest_module(target: str, found: dict[str, Path]) -> str | None:
    parts = target.split(".")
    while parts and ".".join(parts) not in found:
        parts.pop()
    return ".".join(parts) or None


def circles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The import circles: groups of modules that each reach all the others (Tarjan's SCCs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(group)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def long_modules(root: Path, package: str, limit: int = MAX_MODULE_LINES) -> dict[str, int]:
    """The modules over `limit` lines, with their lengths."""
    return {name: n for name, path in modules(root, package).items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > limit}


def long_functions(root: Path, package: str, limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """The functions and methods over `limit` lines (from `def` to their last line), with their lengths."""
    out = {}
    for name, path in modules(root, package).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > limit:
                    out[f"{name}.{node.name}"] = n
    return out


def core_imports(root: Path, package: str, core: tuple[str, ...] = CORE,
                 banned: tuple[str, ...] = NOTEBOOK_ONLY) -> set[str]:
    """The imports that bring banned code into the core: 'importer -> banned name', for the core
    modules and every package module they import, directly or not (the search stops at a banned
    module: its own imports are its business). A module outside the core says which core module
    reaches it."""
    inside, outside = graph(root, package)

    def under(name: str, prefixes) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    core_modules = sorted(m for m in inside if under(m, [f"{package}.{c}" for c in core]))
    reached_from = {m: m for m in core_modules}
    todo = list(core_modules)
    out = set()
    while todo:
        module = todo.pop()
        for name in sorted(outside[module] | inside[module]):
            if under(name, banned):
                by = reached_from[module]
                out.add(f"{module} -> {name}" + ("" if by == module else f" (imported from the core by {by})"))
            elif name in inside and name not in reached_from:
                reached_from[name] = reached_from[module]
                todo.append(name)
    return out


# -- the checker, on a package made to break every rule ------------------------------------------
@pytest.fixture
def bad(tmp_path) -> Path:
    """A package `bad` with a circle (one side an import in a function), a TYPE_CHECKING import,
    a core module importing IPython through another module and importing `bad.ui`, a long module
    and a long function."""
    long_body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    files = {
        "__init__.py": "",
        "core.py": "from . import tools\n\n\ndef later():\n    from .ui import panel  # in a function, still\n",
        "tools.py": "import IPython.display\n",
        "ui/__init__.py": "from ..core import later\nfrom .widget import panel\n",
        "ui/widget.py": "import IPython.display\n\npanel = 1\n",
        "typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import hints\n",
        "hints.py": "import bad.typed\nfrom bad import long\n",
        "big.py": "\n" * (MAX_MODULE_LINES + 1),
        "long.py": f"def short():\n    pass\n\n\nasync def tall():\n{long_body}",
    }
    for name, text in files.items():
        path = tmp_path / "bad" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path / "bad"


def test_the_checker_finds_a_circle_through_an_import_inside_a_function(bad):
    inside, _ = graph(bad, "bad")
    assert inside == {"bad": set(), "bad.core": {"bad.tools", "bad.ui"}, "bad.tools": set(),
                      "bad.ui": {"bad.core", "bad.ui.widget"},
                      "bad.ui.widget": set(), "bad.typed": set(), "bad.hints": {"bad.typed", "bad.long"},
                      "bad.big": set(), "bad.long": set()}
    assert circles(inside) == [{"bad.core", "bad.ui"}]


def test_the_checker_leaves_out_type_checking_imports(bad):
    inside, _ = graph(bad, "bad")
    assert inside["bad.typed"] == set() and "bad.typed" in inside["bad.hints"]


def test_the_checker_finds_long_modules_and_functions(bad):
    assert long_modules(bad, "bad") == {"bad.big": MAX_MODULE_LINES + 1}
    assert long_functions(bad, "bad") == {"bad.long.tall": MAX_FUNCTION_LINES + 1}


def test_the_checker_finds_a_core_module_reaching_notebook_code(bad):
    found = core_imports(bad, "bad", core=("core",), banned=("IPython", "bad.ui"))
    assert found == {"bad.core -> bad.ui", "bad.tools -> IPython.display (imported from the core by bad.core)"}


# -- llmnb itself --------------------------------------------------------------------------------
ROOT = Path(llmnb.__file__).parent


def new(found: dict[str, int] | set[str], known: set[str]) -> list[str]:
    """The violations not in `known`, long ones with their lengths."""
    return sorted(f"{k} ({found[k]} lines)" if isinstance(found, dict) else k for k in found if k not in known)


def test_no_import_circle_inside_llmnb():
    found = [c for c in circles(graph(ROOT, "llmnb")[0]) if c not in KNOWN_CIRCLES]
    assert not found, f"import circles (imports inside functions count): {[sorted(c) for c in found]}"


def test_no_module_over_400_lines():
    assert not (found := new(long_modules(ROOT, "llmnb"), KNOWN_LONG_MODULES)), \
        f"modules over {MAX_MODULE_LINES} lines, to split along their ideas: {found}"


def test_no_function_over_50_lines():
    assert not (found := new(long_functions(ROOT, "llmnb"), KNOWN_LONG_FUNCTIONS)), \
        f"functions over {MAX_FUNCTION_LINES} lines: {found}"


def test_the_core_imports_no_notebook_code():
    assert not (found := new(core_imports(ROOT, "llmnb"), KNOWN_CORE_IMPORTS)), \
        f"imports that bring IPython, ipywidgets, timeline or magics into the core: {found}"
