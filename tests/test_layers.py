"""The package layout is the architecture: a lower layer never imports a higher one (ARCHITECTURE.md).

Every ``import`` and ``from ... import`` in ``app/`` is read with ``ast`` (inside functions too),
so a lazy import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"
# Lowest first. Modules of one layer may import each other; web and cli are both top layers and
# may not import each other. app/__main__.py is the program entry and may import anything.
LAYERS: list[set[str]] = [
    {"config", "errors"},
    {"files"},
    {"net"},
    {"core"},
    {"index"},
    {"service"},
    {"metrics"},
    {"web", "cli"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def layer_of(module: str) -> str:
    """``app.core.embed`` -> ``core``; ``app.config`` -> ``config``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def app_imports(path: Path, root: Path = APP) -> list[tuple[int, str]]:
    """(line, imported app module) for every import of ``app.*`` in ``path`` (a file below ``root``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "app"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "app":
                names = [f"{module}.{a.name}" for a in node.names] if module == "app" else [module]
                found += [(node.lineno, m) for m in names]
    return found


def violations(root: Path = APP) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        if rel.as_posix() in ("app/__main__.py", "app/__init__.py"):
            continue
        own = layer_of(".".join(rel.with_suffix("").parts))
        for line, module in app_imports(path, root):
            other = layer_of(module)
            if other not in RANK or own not in RANK:
                out.append(f"{rel}:{line}: {module} is in no layer")
            elif RANK[other] > RANK[own] or (RANK[other] == RANK[own] and other != own):
                out.append(f"{rel}:{line}: {own} imports {module} ({other} is not below it)")
    return out


def test_every_package_is_a_layer():
    packages = {p.name for p in APP.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    modules = {p.stem for p in APP.glob("*.py")} - {"__init__", "__main__"}
    assert packages | modules == set(RANK), "a package or top-level module that no layer names"
    assert modules <= {"config", "errors"}, f"only config and errors live at app/'s top level, not {modules}"


def test_no_layer_imports_a_higher_one():
    assert violations() == []


def test_the_check_catches_an_upward_import(tmp_path):
    """The test above can fail: a core module importing the service layer, even lazily, is reported."""
    fake = tmp_path / "app"
    for layer in RANK:
        if layer not in ("config", "errors"):
            (fake / layer).mkdir(parents=True, exist_ok=True)
            (fake / layer / "__init__.py").write_text("")
    (fake / "core" / "ok.py").write_text("from app.net.fetch import fetch_url\nfrom app.core import ok\n")
    (fake / "core" / "bad.py").write_text("def f():\n    from app.service.search import SearchService\n")
    (fake / "web" / "bad.py").write_text("import app.cli.main\n")
    (fake / "index" / "rel.py").write_text("from ..service import build\n")
    found = violations(fake)
    assert len(found) == 3, found
    assert any("core/bad.py:2" in v and "app.service.search" in v for v in found)
    assert any("web/bad.py" in v and "app.cli.main" in v for v in found)
    assert any("index/rel.py" in v and "imports app.service" in v for v in found)


ENTRY_POINTS = {"web", "cli"}  # their __init__ exports what the entry points and the server's callers use


@pytest.mark.parametrize("package", sorted(RANK.keys() - {"config", "errors"}))
def test_package_init_says_what_the_layer_owns_and_exports_only_what_is_used(package):
    """Each package's ``__init__`` has a docstring saying what the layer owns. ``app.web`` and ``app.cli``
    export what their entry points use (``__all__``, one name a line, each of them imported from the package
    somewhere); the other layers re-export nothing, so importing one module never loads its siblings."""
    init = APP / package / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"app/{package}/__init__.py has no docstring saying what the layer owns"
    exported = [n for n in tree.body if isinstance(n, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)]
    if package not in ENTRY_POINTS:
        assert not exported and not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body), (
            f"app/{package}/__init__.py re-exports; import from its modules")
        return
    names = ast.literal_eval(exported[0].value)
    assert names and len(names) == len(set(names))
    lines = [line.strip() for line in init.read_text().splitlines()]
    assert all(f'"{n}",' in lines for n in names), "one exported name a line"
    imported = set()
    for path in [*APP.rglob("*.py"), *(APP.parent / "tests").glob("*.py"), *(APP.parent / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == f"app.{package}":
                imported |= {a.name for a in node.names}
    pyproject = (APP.parent / "pyproject.toml").read_text(encoding="utf-8")
    unused = [n for n in names if n not in imported and f"app.{package}:{n}" not in pyproject]
    assert not unused, f"app.{package} exports names nothing imports from it: {unused}"
